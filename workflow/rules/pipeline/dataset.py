"""The dataset's part in the rerun plan: which rules a change of the user's files reruns.

Rules read the image index (labels/image_labels.json) as an ``ancient`` input, so that image_labels rerunning
does not by itself rerun them; instead each rule's ``data`` param is the fingerprint of what it reads of the
dataset (stages/data/fingerprint.py), and Snakemake reruns it exactly when that changed. Fingerprints are
memoised for one Snakemake process, keyed on the index's stat: within a run only image_labels rewrites the
index, and the files a fingerprint reads are the user's, which no rule writes.
"""
from __future__ import annotations

import functools
import os

from stages.data.fingerprint import dataset_fingerprint, fingerprint
from stages.data.layout import DatasetLayout
from stages.data.voc import find_images


def _stat(path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class DatasetPlan:
    """The fingerprints of one run's dataset, for its rules' params."""

    def __init__(self, layout: DatasetLayout, index_path: str):
        self.layout = layout
        self.index_path = index_path

    @functools.cached_property
    def _images(self) -> dict:
        return find_images(self.layout.images) if self.layout.generated is None else {}

    @functools.cache  # noqa: B019 (one plan per run: it lives as long as the workflow)
    def _split(self, split: str, aspects: tuple[str, ...], index_stat) -> str:
        return fingerprint(self.layout, split, aspects, self.index_path, self._images)

    def split(self, split: str, *aspects: str) -> str:
        """The fingerprint of ``aspects`` (images, labels, masks) of ``split``."""
        return self._split(split, tuple(sorted(aspects)), _stat(self.index_path))

    @functools.cached_property
    def everything(self) -> str:
        """What image_labels reads: every split's images, masks and lists, tags, XML (nothing decoded)."""
        return dataset_fingerprint(self.layout, self._images)
