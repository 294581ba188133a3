"""The dataset's part in the rerun plan: which rules a change of the user's files reruns.

A rule that reads the dataset itself (images, masks) takes as an input a file named after the fingerprint of
what it reads (stages/data/fingerprint.py), written by rule fingerprint; rule image_labels takes the fingerprint
of what it writes into the index. An edit changes a fingerprint, so the file of the new one is missing: rule
fingerprint runs, and so does every rule that reads what changed, and only those. Nothing is written while the
workflow is parsed, and no input is ``ancient``: Snakemake skips the other checks of a job below one that has
to run where the only path between them is ``ancient``.

Fingerprints are computed once per Snakemake process, keyed on the image index's stat: the files they read are
the user's, which no rule writes, and the index (whose records spare hashing and decoding unchanged files)
changes only when image_labels writes it. Photos to segment are hashed likewise, sparing those whose records in
rule segment's cache still match them.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from stages.data.fingerprint import digest, files_fingerprint, index_fingerprint, read_records
from stages.data.layout import DatasetLayout
from stages.data.photos import photos_listing, results_name
from stages.data.voc import find_images


def _stat(path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class DatasetPlan:
    """The fingerprint files of one run's dataset, for its rules' inputs."""

    def __init__(self, layout: DatasetLayout, index_path: str, folder: str):
        self.layout = layout
        self.index_path = index_path
        self.folder = folder  # where rule fingerprint writes the files

    @functools.cached_property
    def _images(self) -> dict:
        return find_images(self.layout.images) if self.layout.generated is None else {}

    @functools.cache  # noqa: B019 (one plan per run: it lives as long as the workflow)
    def _index(self, index_stat) -> str:
        return index_fingerprint(self.layout, self.index_path, self._images)

    @functools.cached_property
    def _records(self) -> dict:
        return read_records(self.index_path)

    @functools.cache  # noqa: B019
    def _files(self, split: str, aspect: str) -> str:
        return files_fingerprint(self.layout, split, aspect, self._images, self._records)

    def index(self) -> str:
        """The file named after what the image index holds: image_labels's input."""
        return f"{self.folder}/index-{self._index(_stat(self.index_path))}"

    def files(self, split: str, aspect: str) -> str:
        """The file named after the images or masks (``aspect``) of ``split``."""
        return f"{self.folder}/{split}-{aspect}-{self._files(split, aspect)}"

    @functools.cache  # noqa: B019
    def photos(self, folder: str, cache: str) -> str:
        """The file named after the photos of a folder (rule segment's, its cache at ``cache``): each one's name
        and bytes."""
        return f"{self.folder}/photos-{results_name(folder)}-{digest(photos_listing(folder, Path(cache)))}"
