"""New photos to segment: found in folders or named one by one, each with an id of its own whatever its name.

A photo's id is its path below the folder without the extension (a file named alone: its name without it). Where
that id is not unique (``a.jpg`` beside ``a.png``, or ``a.jpg.png`` whose id would be ``a.jpg``), the photos
concerned keep their extension in the id. Links that lead nowhere (broken or looping) and links to folders are
reported as not read, never skipped without a word. A name that is not UTF-8 keeps its bytes in the files written
for it; :func:`shown` is the text a page or a table shows of it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from stages import StageError
from stages.data.fingerprint import identity, sha256
from stages.data.voc import image_extensions


def shown(name: str) -> str:
    """``name`` as text that any page or table can hold: bytes that are not UTF-8 written as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _walk(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files under ``folder`` (links to files followed, links to folders not, so no loop), and the
    links that could not be followed, each with the reason."""
    exts = image_extensions()
    files, failed = [], []
    for parent, dirs, names in os.walk(folder):
        for d in sorted(dirs):
            if os.path.islink(os.path.join(parent, d)):
                failed.append((os.path.join(parent, d), "a link to a folder: not followed (name the folder itself)"))
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(parent, d)))
        for name in sorted(names):
            path = Path(parent, name)
            if path.suffix.lower() not in exts:
                continue
            if path.is_file():
                files.append(path)
            elif path.is_symlink():
                failed.append((str(path), "a link that leads to no file (broken, or a loop of links)"))
    return files, failed


def _stem(name: str) -> str:
    suffix = Path(name).suffix
    return name[: -len(suffix)] if suffix else name


def unique_ids(files: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """``(id, file)`` of ``(name, file)`` pairs (``name``: the path that stands for the file, with its
    extension): the name without its extension, or the whole name where that would not be unique."""
    stems: dict[str, int] = {}
    for name, _ in files:
        stems[_stem(name)] = stems.get(_stem(name), 0) + 1
    names = {name for name, _ in files}
    return [(_stem(name) if stems[_stem(name)] == 1 and _stem(name) not in names else name, path)
            for name, path in files]


def find_photos(paths) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """id -> file of the photos named (folders searched; files taken as they are) and the ones that cannot be
    read, each with the reason. A path that does not exist stops with one line."""
    named, failed = [], []
    for path in map(Path, paths):
        if path.is_dir():
            files, bad = _walk(path)
            named += [(f.relative_to(path).as_posix(), f) for f in files]
            failed += bad
        elif path.is_file():
            named.append((path.name, path))
        else:
            raise StageError(f"{shown(str(path))}: no such photo or folder")
    found: dict[str, Path] = {}
    for image_id, f in unique_ids(named):
        if image_id in found:  # the same name given twice (two folders with a photo of one name)
            failed.append((str(f), f"its name {shown(image_id)!r} is that of {shown(str(found[image_id]))}"))
        else:
            found[image_id] = f
    return dict(sorted(found.items())), failed


def results_name(folder) -> str:
    """The name of the results of a folder of photos (rule segment's): the folder's own name and a digest of
    where it is, so that two folders of one name (``a/holiday``, ``b/holiday``) keep their results apart."""
    where = Path(folder).resolve()
    return f"{where.name}-{hashlib.sha256(os.fsencode(where)).hexdigest()[:8]}"


def cache_of(out) -> Path:
    """Where rule segment keeps each photo's results between calls: beside its output folder, hidden."""
    out = Path(out)
    return out.parent / f".{out.name}.cache"


def photos_listing(folder, cache: Path) -> list:
    """What the results of a folder of photos depend on: each photo's name and the sha256 of its bytes (rule
    segment's cache records spare hashing the photos unchanged since they were segmented)."""
    photos, failed = find_photos([folder])
    return [[i, str(p), photo_digest(p, read_record(cache, i))] for i, p in photos.items()] + [list(f) for f in failed]


def record_path(cache: Path, image_id: str) -> Path:
    """A photo's record in segment's cache: what it was computed from (key, sha256, identity) and its results."""
    return cache / "records" / f"{image_id}.json"


def read_record(cache: Path, image_id: str) -> dict | None:
    try:
        return json.loads(record_path(cache, image_id).read_text())
    except (OSError, ValueError):
        return None


def photo_digest(path: Path, known: dict | None = None) -> str:
    """The sha256 of a photo's bytes: ``known`` (a record of an earlier run with ``identity`` and ``sha256``)
    where the photo's identity still matches it."""
    if known and known.get("identity") == identity(path):
        return known["sha256"]
    return sha256(path)
