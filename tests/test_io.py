"""Atomic artifact writes: a failed write leaves the previous file and no partial one."""
import errno
from pathlib import Path

import pytest

from stages import StageError
from stages.io import atomic_path, read_json, write_json


def test_a_write_lands_whole(tmp_path):
    write_json(tmp_path / "t.json", {"a": 1})
    assert read_json(tmp_path / "t.json") == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_a_full_disk_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, monkeypatch):
    target = tmp_path / "t.json"
    write_json(target, {"old": True})
    real_write = Path.write_text

    def full_disk(self, text, *a, **kw):
        real_write(self, text[: len(text) // 2])  # half written, then the device is full
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(StageError, match=r"t.json: no space left on the device; nothing was written"):
        write_json(target, {"new": True})
    monkeypatch.undo()
    assert read_json(target) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_an_exception_inside_removes_the_temporary_file(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_unreadable_json_names_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StageError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")
