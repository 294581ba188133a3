"""The lowest layer, below the data readers: artifact files written atomically (``io``) and progress lines
(``progress``)."""
