"""Classifier training: the artifact, and a killed run resuming to the same weights."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import Executes, classifier_cfg

from stages import StageError
from stages.data.datasets import TrainSamples
from stages.data.index import load_index
from stages.core.engine import fit, reference_param_groups
from stages.utils.io import load_model, write_json
from stages.models.classifier import CAMClassifier
from stages.ops.puzzle import VARIANTS
from stages.core.runtime import make_runtime
from stages.train_classifier import puzzle_step, train_classifier


def test_classifier_maps_are_at_output_stride_16():
    model = CAMClassifier("resnet18", 4).eval()
    assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 4, 4, 6)


def test_train_classifier_writes_model_sidecar_and_history(tiny_index, cpu, tmp_path):
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    history = train_classifier(tiny_index, ids, "puzzle", classifier_cfg(), cpu, tmp_path / "m" / "model.pt", tmp_path / "ck.pt")
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"cls", "p_cls", "re", "total"} <= set(history[0])
    state, meta = load_model(tmp_path / "m" / "model.pt")
    assert meta["variant"] == "puzzle" and meta["classes"] == tiny_index.classes
    assert meta["pretrained"] is None  # random start; otherwise the exact timm tag or file
    assert state["classifier.weight"].shape == (4, 512, 1, 1)
    assert (tmp_path / "m" / "history.csv").read_text().splitlines()[0].startswith("epoch,lr,")


def test_unknown_variant_is_a_clear_error(tiny_index, cpu, tmp_path):
    with pytest.raises(StageError, match="variant: unknown 'both'"):
        train_classifier(tiny_index, [], "both", classifier_cfg(), cpu, tmp_path / "m.pt", tmp_path / "c.pt")


class Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_weights(tiny_index, cpu, tmp_path):
    straight = tiny_fit(tiny_index, cpu, tmp_path / "a.pt")
    with pytest.raises(Killed):
        tiny_fit(tiny_index, cpu, tmp_path / "b.pt", kill_at=3)  # two steps per epoch: killed in epoch 2
    assert torch.load(tmp_path / "b.pt", weights_only=True)["epoch"] == 1
    resumed = tiny_fit(tiny_index, cpu, tmp_path / "b.pt")
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_a_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tiny_index, cpu, tmp_path):
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    cfg = classifier_cfg(epochs=2)
    model = CAMClassifier("resnet18", 4)
    data = TrainSamples([tiny_index.image_path(i) for i in ids], cfg, 0,
                        labels=[tiny_index.labels[i] for i in ids], num_classes=4)
    step = puzzle_step(model, VARIANTS["puzzle"], 4.0, 0.5)

    def diverging(batch, it, max_it):
        terms = step(batch, it, max_it)
        if it == 3:
            terms["total"] = terms["total"] * float("nan")
        return terms

    with pytest.raises(StageError, match=r"non-finite loss at step 3 \(epoch 2\).*last good checkpoint: .*ck.pt"):
        fit(model, reference_param_groups(model, model.is_new, cfg), data, lambda net: diverging, cfg, cpu, tmp_path / "ck.pt",
            "k", "test")
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["epoch"] == 1


def test_a_sigkilled_training_process_resumes_from_its_checkpoint(tiny_index, tmp_path):
    """The stage's command line, killed for real after its first checkpoint, then rerun."""
    labels = tmp_path / "labels.json"
    write_json(labels, tiny_index.to_json())
    split = tiny_index.layout.split_file("train")
    cfg = json.dumps(classifier_cfg(epochs=4, batch_size=2))

    def command(name):
        return [sys.executable, "-m", "stages.train_classifier", "--cfg", cfg, "--runtime", '{"device": "cpu"}',
                "--threads", "1", "--labels", str(labels), "--split-file", str(split), "--variant", "puzzle",
                "--out", str(tmp_path / name / "model.pt"), "--checkpoint", str(tmp_path / f"{name}.ckpt")]

    subprocess.run(command("straight"), check=True, capture_output=True)
    proc = subprocess.Popen(command("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "killed.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model.pt").exists()
    assert torch.load(tmp_path / "killed.ckpt", weights_only=True)["epoch"] < 4
    rerun = subprocess.run(command("killed"), check=True, capture_output=True, text=True)
    assert "resumed from" in rerun.stderr
    straight, _ = load_model(tmp_path / "straight" / "model.pt")
    resumed, _ = load_model(tmp_path / "killed" / "model.pt")
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_a_checkpoint_resumes_only_under_the_same_precision(tiny_index, monkeypatch, tmp_path):
    keys = []
    monkeypatch.setattr("stages.train_classifier.fit", lambda *a, **kw: keys.append(a[7]) or [])
    monkeypatch.setattr("stages.train_classifier.save_trained", lambda *a: None)
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    for precision in ("fp32", "bf16", "fp32"):
        rt = make_runtime("cpu", precision=precision)
        train_classifier(tiny_index, ids, "puzzle", classifier_cfg(), rt, tmp_path / "m.pt", tmp_path / "c.pt")
    assert keys[0] == keys[2] != keys[1]


def tiny_fit(tiny_index, cpu, checkpoint, labels=None, kill_at=None):
    """Two epochs of the puzzle classifier from seed 0; ``labels`` replace the image labels; killed at step ``kill_at``."""
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    cfg = classifier_cfg(epochs=2)
    torch.manual_seed(0)
    model = CAMClassifier("resnet18", 4)
    data = TrainSamples([tiny_index.image_path(i) for i in ids], cfg, 0,
                        labels=labels or [tiny_index.labels[i] for i in ids], num_classes=4)
    make_step = killed_at(puzzle_step, kill_at)
    fit(model, reference_param_groups(model, model.is_new, cfg), data, lambda net: make_step(net, VARIANTS["puzzle"], 4.0, 0.5),
        cfg, cpu, checkpoint, "k", "test")
    return model.state_dict()


def test_a_truncated_checkpoint_is_set_aside_with_a_warning_and_training_starts_over(tiny_index, cpu, tmp_path, caplog):
    straight = tiny_fit(tiny_index, cpu, tmp_path / "a.pt")
    with pytest.raises(Killed):
        tiny_fit(tiny_index, cpu, tmp_path / "b.pt", kill_at=3)
    data = (tmp_path / "b.pt").read_bytes()
    (tmp_path / "b.pt").write_bytes(data[: len(data) // 2])
    with caplog.at_level("INFO", logger="stages"):
        rerun = tiny_fit(tiny_index, cpu, tmp_path / "b.pt")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith(f"{tmp_path / 'b.pt'}: unreadable checkpoint (")
    assert warnings[0].endswith("set aside as b.pt.unreadable, training starts over")
    assert (tmp_path / "b.pt.unreadable").read_bytes() == data[: len(data) // 2]
    assert not any("resumed" in r.getMessage() for r in caplog.records)
    for k in straight:
        assert torch.equal(straight[k], rerun[k]), k


def test_a_checkpoint_holding_a_pickled_object_is_refused_and_never_executed(tiny_index, cpu, tmp_path):
    marker = tmp_path / "executed"
    torch.save({"key": "k", "epoch": 1, "history": [], "payload": Executes(marker)}, tmp_path / "ck.pt")
    with pytest.raises(StageError, match=rf"^{tmp_path / 'ck.pt'}: checkpoint holds Python objects \(.*system\).*refusing"):
        tiny_fit(tiny_index, cpu, tmp_path / "ck.pt")
    assert not marker.exists() and (tmp_path / "ck.pt").exists()


def test_checkpoints_load_with_weights_only(tiny_index, cpu, tmp_path):
    with pytest.raises(Killed):
        tiny_fit(tiny_index, cpu, tmp_path / "ck.pt", kill_at=3)
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert state["epoch"] == 1 and [row["epoch"] for row in state["history"]] == [1]


def test_a_checkpoint_of_other_image_labels_is_not_resumed(tiny_index, tmp_path, caplog):
    """Kill, change the image labels, rerun: the rerun equals a clean run on the new labels."""
    labels = tmp_path / "labels.json"
    write_json(labels, tiny_index.to_json())
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    cfg = classifier_cfg(epochs=2)

    def rt():  # a fresh runtime seeds the model's initialisation afresh
        return make_runtime("cpu", seed=0)

    with pytest.raises(Killed), pytest.MonkeyPatch.context() as mp:
        mp.setattr("stages.train_classifier.puzzle_step", killed_at(puzzle_step, 3))
        train_classifier(tiny_index, ids, "puzzle", cfg, rt(), tmp_path / "old" / "model.pt", tmp_path / "ck.pt")
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["epoch"] == 1
    changed = tiny_index.to_json()
    changed["labels"][ids[0]] = [c for c in range(1, 5) if c not in changed["labels"][ids[0]]][:1]
    write_json(labels, changed)
    new_index = load_index(labels)
    with caplog.at_level("INFO", logger="stages"):
        train_classifier(new_index, ids, "puzzle", cfg, rt(), tmp_path / "rerun" / "model.pt", tmp_path / "ck.pt")
    assert any("not resuming from" in r.getMessage() for r in caplog.records)
    assert not any("resumed" in r.getMessage() for r in caplog.records)
    train_classifier(new_index, ids, "puzzle", cfg, rt(), tmp_path / "clean" / "model.pt", tmp_path / "clean.pt")
    rerun, _ = load_model(tmp_path / "rerun" / "model.pt")
    clean, _ = load_model(tmp_path / "clean" / "model.pt")
    for k in clean:
        assert torch.equal(clean[k], rerun[k]), k


def killed_at(make_step, kill_at):
    """A step factory like ``make_step`` whose steps raise Killed at iteration ``kill_at``."""

    def factory(*args, **kw):
        step = make_step(*args, **kw)

        def killable(batch, it, max_it):
            if it == kill_at:
                raise Killed
            return step(batch, it, max_it)

        return killable

    return factory
