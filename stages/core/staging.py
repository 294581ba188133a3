"""Per-image outputs that survive a killed job.

A per-image stage writes its files into a staging folder beside its output folder and
renames the staging folder onto the output only when every image is done. Snakemake
never sees a half-filled output; a rerun after a kill keeps the staged files written
with the same settings and inputs, and computes only the missing ones.
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
    """What outputs depend on besides the settings: each input's path, size and mtime (a stat, cheap for 10k files)."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def file_digest(path) -> str:
    """The sha256 of a file's bytes: a model or label file a result was computed from."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class StagedOutputs:
    def __init__(self, out: Path, suffix: str, *key_parts):
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
        """Move the complete set into place (one rename)."""
        (self.staging / ".key").unlink()
        if self.out.exists():
            shutil.rmtree(self.out)
        self.staging.rename(self.out)
