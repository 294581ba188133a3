"""Per-image outputs that survive a killed job.

A per-image stage writes its files into a staging folder beside its output folder and
renames the staging folder onto the output only when every image is done. Snakemake
never sees a half-filled output; a rerun after a kill keeps the staged files written
with the same settings and inputs, and computes only the missing ones.

What a staged file is computed from is known by its bytes, never by size and mtime: the
settings and the models (the key: another key discards the whole staging folder), and
each image's own files (its ``sources``: the image, the maps of it a stage reads), so an
image replaced while the job was down, even by one of the same size and mtime, is computed
again, and the other images' staged files are kept.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("stages")


def settings_key(*parts) -> str:
    """A digest of everything that determines a result: a checkpoint or staged file is reused only under the same one."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def inputs_key(*paths) -> list:
    """What outputs depend on besides the settings: each input's path and the sha256 of its bytes. The bytes, not
    the size and mtime: a file replaced by another of the same size and time (``cp -p``, a restore) is another
    input. Hashing is cheap next to the forward pass of each image."""
    return [[str(p), file_digest(p)] for p in paths]


def file_digest(path) -> str:
    """The sha256 of a file's bytes: a model or label file a result was computed from."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class StagedOutputs:
    """``out``'s images staged as ``<id><suffix>``; ``key_parts``: the settings and models; ``sources``: id -> the
    files its output is computed from."""

    def __init__(self, out: Path, suffix: str, *key_parts, sources: dict[str, list] | None = None):
        self.out = Path(out)
        self.suffix = suffix
        self.staging = self.out.parent / f".{self.out.name}.staging"
        self.key = settings_key(*key_parts)
        key_file = self.staging / ".key"
        if self.staging.exists() and (not key_file.exists() or key_file.read_text() != self.key):
            log.info("%s: discarding staged files written with other settings or inputs", self.staging)
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        key_file.write_text(self.key)
        self._drop_changed({i: [file_digest(p) for p in paths] for i, paths in (sources or {}).items()})

    def _drop_changed(self, digests: dict[str, list[str]]) -> None:
        """Remove the staged files of images whose sources are not the bytes they were computed from (as an
        earlier run recorded them), then record this run's."""
        record = self.staging / ".sources"
        try:
            earlier = json.loads(record.read_text())
        except (OSError, ValueError):
            earlier = {}
        changed = [i for i, d in digests.items() if self.path(i).exists() and earlier.get(i) != d]
        for i in changed:
            self.path(i).unlink()
        if changed:
            log.info("%s: %d staged images were computed from other files (first: %s); computing them again",
                     self.out.name, len(changed), changed[0])
        tmp = record.with_name(".sources.tmp")
        tmp.write_text(json.dumps(digests))
        os.replace(tmp, record)

    def path(self, image_id: str) -> Path:
        return self.staging / f"{image_id}{self.suffix}"

    def todo(self, ids: list[str]) -> list[str]:
        """The ids without a staged file; logs how many a previous run left."""
        missing = [i for i in ids if not self.path(i).exists()]
        if len(missing) < len(ids):
            log.info("%s: %d of %d images staged by an earlier run; computing the other %d",
                     self.out.name, len(ids) - len(missing), len(ids), len(missing))
        return missing

    def commit(self) -> None:
        """Move the complete set into place (one rename), without the temporary files a killed run left."""
        (self.staging / ".key").unlink()
        (self.staging / ".sources").unlink()
        for tmp in self.staging.rglob(".*.tmp"):  # every file of this run is in place: these are a dead one's
            tmp.unlink()
        if self.out.exists():
            shutil.rmtree(self.out)
        self.staging.rename(self.out)
