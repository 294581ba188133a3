"""Puzzle-CAM weakly-supervised semantic segmentation, one module per pipeline stage.

Each stage module (``python -m stages.<rule>``) is a thin command line over the
functions in ``stages.data``, ``stages.models`` and ``stages.ops``.
"""


class StageError(Exception):
    """A problem with a stage's input or configuration, reported as one line."""
