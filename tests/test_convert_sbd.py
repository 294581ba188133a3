"""SBD's cls/*.mat (struct GTcls, field Segmentation) to VOC palette PNGs, and clear errors on bad files."""
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from conftest import run_stage
from PIL import Image

from stages import StageError
from stages.convert_sbd import convert_sbd, read_sbd_mask
from stages.data.voc import VOC_CLASSES
from stages.utils.io import read_label_png

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sbd(write_sbd_mat, tmp_path):
    rng = np.random.default_rng(0)
    maps = {f"2008_{i:06d}": rng.choice([0, 3, 15, 20], size=(24 + i, 32)).astype(np.uint8) for i in range(3)}
    for image_id, seg in maps.items():
        write_sbd_mat(tmp_path / "dataset/cls" / f"{image_id}.mat", seg)
    return tmp_path / "dataset", maps


def test_masks_round_trip_as_palette_pngs(sbd, tmp_path):
    root, maps = sbd
    assert convert_sbd(root, tmp_path / "aug") == len(maps)
    for image_id, seg in maps.items():
        with Image.open(tmp_path / "aug" / f"{image_id}.png") as png:
            assert png.mode == "P"
        np.testing.assert_array_equal(read_label_png(tmp_path / "aug" / f"{image_id}.png"), seg)
    assert not (tmp_path / ".aug.staging").exists()


def test_reads_the_segmentation_field(sbd):
    root, maps = sbd
    np.testing.assert_array_equal(read_sbd_mask(root / "cls/2008_000001.mat"), maps["2008_000001"])


def test_unreadable_mat_is_named_and_nothing_is_written(sbd, tmp_path):
    root, _ = sbd
    (root / "cls/2008_000001.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(StageError, match=r"cls/2008_000001\.mat: unreadable \.mat file"):
        convert_sbd(root, tmp_path / "aug")
    assert not (tmp_path / "aug").exists()


def test_mat_without_gtcls_is_named(sbd, tmp_path):
    root, _ = sbd
    scipy.io.savemat(root / "cls/2008_000002.mat", {"GTinst": {"Segmentation": np.zeros((4, 4), np.uint8)}})
    with pytest.raises(StageError, match=r"cls/2008_000002\.mat: no GTcls\.Segmentation"):
        convert_sbd(root, tmp_path / "aug")


def test_label_values_out_of_range_are_named(write_sbd_mat, sbd, tmp_path):
    root, _ = sbd
    write_sbd_mat(root / "cls/2008_000000.mat", np.full((8, 8), 33, np.uint8))
    with pytest.raises(StageError, match=r"cls/2008_000000\.mat: label values \[33\] outside 0..20 and 255"):
        convert_sbd(root, tmp_path / "aug")
    assert not (tmp_path / "aug").exists()


def test_missing_cls_folder_exits_2_with_one_line(tmp_path):
    proc = run_stage("convert_sbd", input={"sbd": tmp_path / "nowhere"}, output={"masks": tmp_path / "aug"},
                     params={"classes": list(VOC_CLASSES)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nowhere/cls'}: missing folder; " \
                                                   "data.sbd must be SBD's benchmark_RELEASE/dataset"
