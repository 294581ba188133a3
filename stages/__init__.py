"""Puzzle-CAM weakly-supervised semantic segmentation: the stages of the pipeline.

Each rule of the workflow has its module here, ``stages/<rule>.py``, run as ``python -m stages.<rule> JOB`` (the
job its rule renders: stages/core/job.py); ``segment`` also runs on its own (``python -m stages.segment --help``).
Below them: ``core`` (the machinery the stages share), ``models``, ``ops``, ``data``, and ``utils`` at the bottom.
"""


class StageError(Exception):
    """A problem with a stage's input or configuration, reported as one line."""
