"""Rule segment and its command line: a folder of new photos segmented as the run predicts its own splits."""
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from stages.core.runtime import make_runtime
from stages.models.classifier import CAMClassifier
from stages.models.segmentation import create_deeplab
from stages.predict_segmentation import predict_segmentation
from stages.segment import class_fractions, photos_of, segment_photos
from stages.utils.io import read_label_png, save_model

CFG = {"scales": [1.0, 0.5], "flip": True,
       "crf": {"iterations": 1, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3},
               "bilateral": {"sxy": 80, "srgb": 13, "compat": 10}}}


@pytest.fixture(scope="module")
def models(tiny_index, tmp_path_factory):
    """A DeepLabv3+ and a classifier as the trainers save them (untrained weights: the inference is what counts)."""
    folder = tmp_path_factory.mktemp("models")
    seg_cfg = {"encoder": "resnet18", "decoder_channels": 32, "aspp_rates": [6, 12, 18], "aspp_separable": False,
               "frozen_bn": False, "pretrained": False, "pretrained_path": None}
    model = create_deeplab("resnet18", 5, 32, aspp_rates=(6, 12, 18), aspp_separable=False, frozen_bn=False)
    save_model(folder / "seg/model.pt", model.state_dict(),
               {"stage": "train_segmentation", "encoder": "resnet18", "classes": tiny_index.classes, "config": seg_cfg})
    cls_cfg = {"backbone": "resnet18", "pretrained": False, "pretrained_path": None}
    save_model(folder / "cls/model.pt", CAMClassifier("resnet18", 4).state_dict(),
               {"stage": "train_classifier", "backbone": "resnet18", "classes": tiny_index.classes, "config": cls_cfg})
    return folder / "seg/model.pt", folder / "cls/model.pt"


def test_a_folder_of_photos_is_segmented_as_the_split_is_predicted(tiny_index, models, tmp_path):
    """The val images renamed and re-encoded as PNG (in the split's order): the same masks, pixel for pixel."""
    model, _ = models
    rt = make_runtime("cpu", precision="fp32")
    ids = tiny_index.ids(tiny_index.layout.split_file("val"))
    predict_segmentation(tiny_index, ids, model, CFG, rt, tmp_path / "pred", processes=2)
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, image_id in enumerate(ids):
        Image.fromarray(tiny_index.read_image(image_id)).save(folder / f"photo_{k:02d}.png")
    rows = segment_photos(photos_of([folder]), model, CFG, rt, tmp_path / "out", processes=2)
    assert [r["id"] for r in rows] == [f"photo_{k:02d}" for k in range(len(ids))]
    for k, image_id in enumerate(ids):
        mask = read_label_png(tmp_path / f"out/photo_{k:02d}.png")
        np.testing.assert_array_equal(mask, read_label_png(tmp_path / "pred" / f"{image_id}.png"))
        assert rows[k]["fractions"] == class_fractions(mask, 5) and rows[k]["size"] == [64, 64]
        with Image.open(tmp_path / f"out/photo_{k:02d}.overlay.jpg") as overlay:
            assert overlay.size[0] == 64 and overlay.size[1] > 64  # the photo, and its legend below
    lines = (tmp_path / "out/classes.csv").read_text().splitlines()
    assert lines[0] == "id,height,width,background,disc,square,triangle,cross" and len(lines) == 1 + len(ids)
    assert (tmp_path / "out/failed.csv").read_text() == "photo,reason\n"
    assert (tmp_path / "out/index.html").read_text().count("<tr class='photo'>") == len(ids)


def test_the_command_line_segments_photos_and_draws_the_classifiers_cams(models, tiny_voc, tmp_path):
    """python -m stages.segment on an installed package, no Snakemake: files and folders, and --classifier."""
    model, classifier = models
    photo = next((tiny_voc / "JPEGImages").glob("*.jpg"))
    proc = subprocess.run([sys.executable, "-m", "stages.segment", "--model", str(model), str(photo), "--out",
                           str(tmp_path / "out"), "--scales", "1.0", "--crf-iterations", "0", "--device", "cpu",
                           "--classifier", str(classifier), "--threads", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert read_label_png(tmp_path / f"out/{photo.stem}.png").shape == (64, 64)
    with Image.open(tmp_path / f"out/{photo.stem}.cams.jpg") as cams:  # one panel per predicted tag, titled
        assert cams.size[0] % 64 == 0 and cams.size[1] == 64 + 24
    proc = subprocess.run([sys.executable, "-m", "stages.segment", "--model", str(model), str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nowhere'}: no such photo or folder"
