"""Rule dataset_manifest: the name, size and mtime of every dataset file the labels are derived from.

A file edited in place changes no folder's timestamp, so Snakemake alone would not notice it.
The manifest is a rule output that image_labels reads; the workflow refreshes it at start-up
(:func:`refresh`) when the files no longer match it, and its newer mtime reruns image_labels and
whatever depends on a changed label. Listing is a stat per file: cheap for VOC's 17k images.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from stages import StageError
from stages.io import write_json

log = logging.getLogger("stages")


def listing(paths) -> dict[str, list[int]]:
    """``{path: [size, mtime_ns]}`` of every file under ``paths`` (folders are walked); a missing path is left out."""
    files = {}
    stack = [str(p) for p in paths]
    while stack:
        path = stack.pop()
        try:
            entries = list(os.scandir(path))
        except NotADirectoryError:
            st = os.stat(path)
            files[path] = [st.st_size, st.st_mtime_ns]
            continue
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir():
                stack.append(entry.path)
            elif not entry.name.startswith("."):  # a writer's temporary files are not part of the dataset
                st = entry.stat()
                files[entry.path] = [st.st_size, st.st_mtime_ns]
    return dict(sorted(files.items()))


def manifest(paths) -> dict:
    return {"paths": [str(p) for p in paths], "files": listing(paths)}


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def refresh(path, paths) -> bool:
    """Rewrite an existing manifest at ``path`` whose files changed; True where it did. A missing one is the rule's to write."""
    path = Path(path)
    if not path.exists():
        return False
    current = manifest(paths)
    if read_manifest(path) == current:
        return False
    write_json(path, current)
    return True


def add_arguments(p):
    p.add_argument("--out", required=True, type=Path, help="manifest JSON to write")
    p.add_argument("paths", nargs="+", type=Path, help="dataset folders and files (folders are walked)")


def run(args):
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        raise StageError(f"{missing[0]}: dataset path does not exist")
    m = manifest(args.paths)
    write_json(args.out, m)
    log.info("dataset_manifest: %d files under %s", len(m["files"]), ", ".join(m["paths"]))


if __name__ == "__main__":
    from stages import cli  # here, not above: the workflow imports this module at start-up, without torch

    cli.main(run, __doc__, add_arguments)
