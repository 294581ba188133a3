"""Atomic artifact writes: a failed write leaves the previous file and no partial one."""
import errno
import os
import stat
from pathlib import Path

import pytest
from conftest import CLASSES, TINY, Executes

from stages import StageError
from stages.make_dataset import make_dataset
from stages.utils.io import atomic_dir, atomic_path, load_model, read_json, save_model, write_json


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


@pytest.mark.parametrize("umask, mode", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_an_artifact_gets_the_umasks_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "t.json", {"a": 1})
        with atomic_path(tmp_path / "m.pt") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == mode


def test_a_generated_dataset_gets_the_umasks_mode(tmp_path):
    old = os.umask(0o002)
    try:
        make_dataset(tmp_path / "VOC2012", CLASSES, {**TINY, "splits": {"train": 1}}, seed=0)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "VOC2012").stat().st_mode) == 0o775
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "VOC2012").rglob("*.png")} == {0o664}


def test_a_model_file_holding_a_pickled_object_is_refused_and_a_truncated_one_named(tmp_path):
    import torch

    marker = tmp_path / "executed"
    save_model(tmp_path / "m.pt", {"w": torch.zeros(2)}, {"config": {}})
    torch.save({"w": torch.zeros(2), "x": Executes(marker)}, tmp_path / "m.pt")
    with pytest.raises(StageError, match=rf"^{tmp_path / 'm.pt'}: model file holds Python objects \(.*system\)"):
        load_model(tmp_path / "m.pt")
    assert not marker.exists()
    save_model(tmp_path / "m.pt", {"w": torch.zeros(2)}, {"config": {}})
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(StageError, match=rf"^{tmp_path / 'm.pt'}: unreadable model file \(.+\)$"):
        load_model(tmp_path / "m.pt")


def test_a_folder_appears_whole_with_the_umasks_mode_or_not_at_all(tmp_path):
    out = tmp_path / "folder"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("a")
            raise RuntimeError("killed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"] and (out / "old.txt").exists()
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("a")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700


def test_what_a_killed_writer_left_beside_a_file_is_removed_when_the_file_is_written_again(tmp_path):
    """A SIGKILL skips the clean-up: the next write of the same file removes the dead process's temporary file
    and folder, and leaves a live writer's alone."""
    import subprocess
    import sys

    from stages.utils.io import HOST

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = tmp_path / f".model.onnx.{HOST}-{pid}.abc123.tmp"
    left.write_bytes(b"x" * 1000)
    left_dir = tmp_path / f".model.onnx.{HOST}-{pid}.def456.tmp"
    left_dir.mkdir()
    live = tmp_path / f".model.onnx.{HOST}-{os.getpid()}.live.tmp"
    live.write_bytes(b"y")
    other_file = tmp_path / f".other.{HOST}-{pid}.abc.tmp"
    other_file.write_bytes(b"z")
    with atomic_path(tmp_path / "model.onnx") as tmp:
        tmp.write_bytes(b"model")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.onnx", live.name, other_file.name])
