"""The lowest layer, below the data readers: artifact files written atomically (``io``), progress lines
(``progress``), items grouped into batches (``batches``), the cells of the tables (``cells``)."""
