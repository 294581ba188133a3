"""The seam between a rule and its stage: every stage reads its rule's job by name; bad input ends in one clear
line on stderr and exit status 2."""
import importlib
import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT, classifier_cfg, run_stage, stage_job

from stages import StageError
from stages.core.job import Job, shard_ids, warnings_in
from stages.utils.io import write_json

# every rule that runs a stage, from the rule files: module stages.<rule> is its stage (rule fingerprint only names
# a file, rule all only asks for the run's artifacts)
RULES = sorted({m for f in (ROOT / "workflow/rules").glob("*.smk")
                for m in re.findall(r"^ *rule (\w+):", f.read_text(), re.M)} - {"all", "fingerprint"})


def test_every_rule_has_a_stage_module_of_its_name_with_a_run():
    assert len(RULES) >= 20
    for rule in RULES:
        assert callable(importlib.import_module(f"stages.{rule}").run), rule


def test_every_stage_rule_has_the_one_shell_line():
    """No rule writes a command line of its own: adding an input touches the rule and the stage only."""
    for path in (ROOT / "workflow/rules").glob("*.smk"):
        text = path.read_text()
        n_rules = len(re.findall(r"^ *rule (?!fingerprint:)\w+:$", text, re.M))
        assert len(re.findall(r"^ *shell:\n *LAUNCH$", text, re.M)) == n_rules, path.name
        assert text.count("**stage(") == n_rules, path.name
        # each rule runs the stage of its own name (the name travels in the job to stages.core.launch)
        names = re.findall(r"^ *rule (?!fingerprint:)(\w+):$", text, re.M)
        assert re.findall(r"\*\*stage\(\s*\"(\w+)\"", text) == names, path.name


def test_a_job_round_trips_and_names_what_the_rule_lacks():
    job = stage_job("make_cams", input={"labels": "a.json", "split": "s.txt"}, output={"cams": "out"},
                    params={"cfg": {"scales": [1.0]}}, wildcards={"seed": 0, "variant": "puzzle"}, threads=3,
                    resources={"gpu": 1})
    again = Job.from_json(job.to_json())
    assert again == job and again.input.labels.name == "a.json" and again.wildcards.seed == "0" and again.threads == 3
    with pytest.raises(StageError, match=r"the rule gives no input named 'model' \(it has: labels, split\)"):
        _ = again.input.model


def test_shards_cover_the_split_once_in_order():
    ids = [str(i) for i in range(10)]
    parts = [shard_ids(ids, (k, 3)) for k in (1, 2, 3)]
    assert sum(parts, []) == ids and [len(p) for p in parts] == [3, 3, 4]


def test_a_stage_without_its_job_prints_its_usage_and_exits_2():
    proc = subprocess.run([sys.executable, "-m", "stages.make_cams"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "usage: python -m stages.make_cams JOB" in proc.stderr
    assert "multi-scale + flip CAMs" in proc.stderr  # its docstring says what it does


def test_unknown_backbone_exits_2_with_one_line(tiny_index, tmp_path):
    labels = tmp_path / "labels.json"
    write_json(labels, tiny_index.to_json())
    out = tmp_path / "m"
    proc = run_stage("train_classifier", input={"labels": labels, "split": tiny_index.layout.split_file("train")},
                     output={"model": out / "model.pt", "meta": out / "model.json", "history": out / "history.csv",
                             "tensorboard": out / "tb"},
                     params={"cfg": classifier_cfg(backbone="resnet17", epochs=1, batch_size=2),
                             "runtime": {"device": "cpu", "precision": "auto", "deterministic": False, "seed": 0},
                             "checkpoint": tmp_path / "c.pt"},
                     wildcards={"seed": 0, "variant": "puzzle"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: backbone: unknown timm model 'resnet17'")
    assert not out.exists()


def test_missing_dataset_root_exits_2_and_names_it(tmp_path):
    data = {"root": str(tmp_path / "VOC2012"), "classes": ["disc"], "splits": ["train"], "train_split": "train",
            "cam_split": "train", "eval_split": "train", "labels": "masks", "image_dir": "JPEGImages",
            "mask_dir": "SegmentationClass"}
    proc = run_stage("image_labels", output={"labels": tmp_path / "labels/image_labels.json",
                                             "splits": [tmp_path / "labels/splits/train.txt"]},
                     params={"data": data, "data_root": None, "run": "r"})
    assert proc.returncode == 2
    assert f"error: {tmp_path / 'VOC2012' / 'JPEGImages'}: missing folder" in proc.stderr
    assert not (tmp_path / "labels").exists()


@pytest.mark.parametrize("module", ["make_dataset", "image_labels", "eval_pseudo_labels",
                                    "eval_segmentation", "report", "summary", "figures", "gather_shards"])
def test_stages_that_need_no_network_start_without_torch(module):
    """Importing torch takes seconds of every job's start-up: the stages that generate, count, score or report
    never pay it."""
    code = f"import sys, stages.{module}; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_warnings_are_read_back_from_the_logs_once_each(tmp_path):
    (tmp_path / "a.log").write_text("2026-01-02 03:04:05,678 INFO fine\n2026-01-02 03:04:05,679 WARNING class x: none\n"
                                    "UserWarning: a library's, not the stage's\n")
    (tmp_path / "b.log").write_text("2026-01-02 03:04:06,000 WARNING class x: none\n2026-01-02 03:04:06,001 WARNING other\n")
    assert warnings_in([tmp_path / "a.log", tmp_path / "b.log", tmp_path / "missing.log"]) == ["class x: none", "other"]
    assert json.loads(Job.make("r").to_json())["threads"] == 1
