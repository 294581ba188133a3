"""The shared machinery of the stages, above the data, the models and the ops: the binding of a rule to its stage
(``job``), the training loop and the trainers' scaffold (``engine``, ``trainer``), devices and precision
(``runtime``), GPU slots (``launch``) and several processes (``distributed``), staged per-image outputs
(``staging``), the dense-CRF pool (``parallel``), scores (``metrics``)."""
