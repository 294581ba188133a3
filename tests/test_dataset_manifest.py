"""The dataset manifest: every file's size and mtime, refreshed when a file is edited in place."""
import json
import os
import subprocess
import sys

from stages.dataset_manifest import listing, manifest, refresh


def dataset(tmp_path):
    root = tmp_path / "VOC2012"
    (root / "SegmentationClass").mkdir(parents=True)
    (root / "SegmentationClass" / "a.png").write_bytes(b"12345")
    (root / "SegmentationClass" / ".a.png.tmp").write_bytes(b"half")  # a writer's temporary file
    (root / "list.txt").write_text("a\n")
    return root


def test_listing_holds_each_files_size_and_mtime(tmp_path):
    root = dataset(tmp_path)
    os.utime(root / "SegmentationClass" / "a.png", ns=(1, 1_000_000_007))
    files = listing([root, tmp_path / "missing"])
    assert files == {str(root / "SegmentationClass" / "a.png"): [5, 1_000_000_007],
                     str(root / "list.txt"): [2, (root / "list.txt").stat().st_mtime_ns]}
    assert listing([root / "list.txt"]) == {str(root / "list.txt"): [2, (root / "list.txt").stat().st_mtime_ns]}


def test_refresh_rewrites_the_manifest_only_when_a_file_changed_in_place(tmp_path):
    root = dataset(tmp_path)
    out = tmp_path / "manifest.json"
    assert not refresh(out, [root]) and not out.exists()  # a missing manifest is the rule's to write
    out.write_text(json.dumps(manifest([root])))
    assert not refresh(out, [root])
    folder_mtime = (root / "SegmentationClass").stat().st_mtime_ns
    with open(root / "SegmentationClass" / "a.png", "r+b") as f:  # in place: same size, no folder changes
        f.write(b"54321")
    os.utime(root / "SegmentationClass" / "a.png", ns=(1, 2_000_000_000))
    assert (root / "SegmentationClass").stat().st_mtime_ns == folder_mtime
    assert refresh(out, [root])
    assert json.loads(out.read_text())["files"][str(root / "SegmentationClass" / "a.png")] == [5, 2_000_000_000]
    assert not refresh(out, [root])


def test_the_stage_writes_the_manifest_and_names_a_missing_path(tmp_path):
    root = dataset(tmp_path)
    run = [sys.executable, "-m", "stages.dataset_manifest", "--out", str(tmp_path / "m.json")]
    subprocess.run([*run, str(root)], check=True, capture_output=True)
    assert json.loads((tmp_path / "m.json").read_text()) == manifest([root])
    proc = subprocess.run([*run, str(root), str(tmp_path / "lists.txt")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'lists.txt'}: dataset path does not exist"
