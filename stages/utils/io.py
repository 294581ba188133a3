"""Artifact I/O: every file is written under a temporary name and renamed into place."""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from stages import StageError


def umask_mode(folder: bool = False) -> int:
    """The mode a plain ``open`` (or ``mkdir``) gives under the process's umask; mkstemp and mkdtemp give 0600/0700."""
    umask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


# The temporary names carry the host and the process that writes them: what a killed process left is removed the
# next time its file is written, and nothing of a live writer's (on a shared filesystem, another host's) is.
HOST = socket.gethostname().replace(".", "_")


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}.{HOST}-{os.getpid()}."


def remove_left_behind(path: Path) -> None:
    """Remove the temporary files and folders of ``path`` that a killed process of this host left beside it."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.{glob.escape(HOST)}-*.tmp"):
        pid = tmp.name[len(f".{path.name}.{HOST}-"):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success, with the umask's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_left_behind(path)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StageError(f"{path}: no space left on the device; nothing was written there (free space and rerun)") from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` in one rename, with the umask's
    mode; on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_left_behind(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.chmod(umask_mode(folder=True))
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise StageError(f"{path}: not valid JSON ({e})") from None


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npz(path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def load_npz(path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise StageError(f"{path}: unreadable npz ({e})") from None


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (256 entries, flattened RGB)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


_PALETTE = voc_palette()


def save_label_png(path, label: np.ndarray) -> None:
    """Save a label map (uint8 class ids, 255 = ignore) as a VOC palette PNG."""
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(_PALETTE)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def read_label_png(path) -> np.ndarray:
    """Read a palette (or greyscale) PNG as its class-index array."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise StageError(f"{path}: label PNG must be palette or greyscale, got mode {img.mode}")
            return np.array(img)
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except OSError as e:
        raise StageError(f"{path}: unreadable PNG ({e})") from None


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_model(path, state_dict, meta: dict) -> None:
    """A model artifact: ``state_dict`` in ``path`` and a JSON sidecar beside it."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state_dict, tmp)
    write_json(Path(path).with_suffix(".json"), {**meta, "git_revision": git_revision()})


class UnreadableFile(StageError):
    """A torch file that cannot be read at all (truncated or damaged)."""


def load_tensors(path, what: str, hint: str = ""):
    """A torch file of tensors and plain data (a model or a checkpoint), read with ``weights_only``.

    One that needs other Python objects is refused, never unpickled; a damaged one raises :class:`UnreadableFile`."""
    import torch

    try:
        foreign = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        state = None if foreign else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file: RuntimeError, EOFError, UnpicklingError, ... with torch's long message
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UnreadableFile(f"{path}: unreadable {what} ({reason})") from None
    if foreign:
        raise StageError(f"{path}: {what} holds Python objects ({', '.join(foreign[:3])}), not only tensors; "
                         f"refusing to unpickle it{hint}")
    return state


def load_model(path):
    """Return ``(state_dict, meta)`` of a model written by :func:`save_model`, read without unpickling any object."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: model file not found")
    meta = read_json(path.with_suffix(".json"))
    return load_tensors(path, "model file"), meta


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (no copy of the bytes), or a copy where the filesystem has no hard links."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
