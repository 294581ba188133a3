"""The shared machinery of the stages, above the data, the models and the ops: the binding of a rule to its stage
(``job``), what a process learns of its host without torch (``host``), GPU slots (``launch``), devices and precision
(``runtime``), several processes (``distributed``), the training loop, what it saves and resumes, and the trainers'
scaffold (``engine``, ``checkpoint``, ``trainer``), staged per-image outputs (``staging``), the dense-CRF pool
(``parallel``), scores (``metrics``)."""
