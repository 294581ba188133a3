"""Stage command lines: bad input ends in one clear line on stderr and exit status 2."""
import importlib
import json
import subprocess
import sys

import pytest

from stages import cli
from stages.utils.io import write_json


def run_stage(module, *args):
    return subprocess.run([sys.executable, "-m", f"stages.{module}", *args], capture_output=True, text=True, timeout=120)


STAGES = ("make_dataset", "image_labels", "train_classifier", "make_cams", "eval_cams", "affinity_labels", "train_affinity",
          "random_walk", "pseudo_labels", "eval_masks", "train_segmentation", "predict_segmentation", "report", "figures")


@pytest.mark.parametrize("module", STAGES)
def test_every_stage_has_a_help_page(module):
    stage = importlib.import_module(f"stages.{module}")
    parser = cli.parser(stage.__doc__)
    stage.add_arguments(parser)
    text = " ".join(parser.format_help().split())  # argparse re-wraps the description
    assert " ".join(stage.__doc__.splitlines()[0].split()) in text and "--cfg" in text


def test_unknown_backbone_exits_2_with_one_line(tiny_index, tmp_path):
    labels = tmp_path / "labels.json"
    write_json(labels, tiny_index.to_json())
    cfg = {"backbone": "resnet17", "pretrained": False, "epochs": 1, "batch_size": 2, "lr": 0.01, "momentum": 0.9,
           "weight_decay": 0, "resize_long": [56, 72], "crop_size": 64, "alpha_max": 4.0, "alpha_ramp": 0.5}
    proc = run_stage("train_classifier", "--cfg", json.dumps(cfg), "--runtime", '{"device": "cpu"}', "--labels", str(labels),
                     "--split-file", str(tiny_index.layout.split_file("train")), "--variant", "puzzle",
                     "--out", str(tmp_path / "m" / "model.pt"), "--checkpoint", str(tmp_path / "c.pt"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: backbone: unknown timm model 'resnet17'")
    assert not (tmp_path / "m").exists()


def test_missing_dataset_root_exits_2_and_names_it(tmp_path):
    proc = run_stage("image_labels", "--root", str(tmp_path / "VOC2012"), "--classes", "disc", "--splits", "train",
                     "--out", str(tmp_path / "labels"))
    assert proc.returncode == 2
    assert f"error: {tmp_path / 'VOC2012' / 'JPEGImages'}: missing folder" in proc.stderr
    assert not (tmp_path / "labels").exists()


@pytest.mark.parametrize("module", ["make_dataset", "dataset_manifest", "image_labels", "eval_masks", "report", "figures"])
def test_stages_that_need_no_network_start_without_torch(module):
    """Importing torch takes seconds of every job's start-up: the stages that generate, count, score or report
    never pay it."""
    code = f"import sys, stages.{module}; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr
