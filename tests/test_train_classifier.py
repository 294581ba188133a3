"""Classifier training: the artifact, and a killed run resuming to the same weights."""
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, Executes, classifier_cfg, index_file, training_job

from stages import StageError
from stages.core.engine import fit, reference_param_groups
from stages.data.datasets import TrainSamples
from stages.models.classifier import CAMClassifier
from stages.ops.puzzle import VARIANTS
from stages.train_classifier import puzzle_step, run
from stages.utils.io import load_model, write_json


def classifier_job(index, tmp_path, name="m", cfg=None, checkpoint="ck.pt", variant="puzzle", **kw):
    labels = tmp_path / "image_labels.json"
    labels = labels if labels.exists() else index_file(index, tmp_path)
    return training_job("train_classifier", labels, index.layout.split_file("train"), tmp_path / name,
                        cfg or classifier_cfg(), tmp_path / checkpoint, wildcards={"seed": 0, "variant": variant}, **kw)


def test_classifier_maps_are_at_output_stride_16():
    model = CAMClassifier("resnet18", 4).eval()
    assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 4, 4, 6)


def test_train_classifier_writes_model_sidecar_history_and_tensorboard(tiny_index, tmp_path):
    history = run(classifier_job(tiny_index, tmp_path))
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"cls", "p_cls", "re", "total"} <= set(history[0])
    state, meta = load_model(tmp_path / "m" / "model.pt")
    assert meta["variant"] == "puzzle" and meta["classes"] == tiny_index.classes
    assert meta["pretrained"] is None  # random start; otherwise the exact timm tag or file
    assert state["classifier.weight"].shape == (4, 512, 1, 1)
    assert (tmp_path / "m" / "history.csv").read_text().splitlines()[0].startswith("epoch,lr,")
    events = scalars(tmp_path / "m" / "tensorboard")
    assert {"loss/cls", "loss/p_cls", "loss/re", "loss/total", "lr", "alpha", "epoch/total", "eval/cam_miou"} <= set(events)
    assert [step for step, _ in events["alpha"]] == [0, 1, 2, 3]  # 8 images, batch 4: two steps an epoch
    assert [v for _, v in events["alpha"]] == pytest.approx([0.0, 2.0, 4.0, 4.0])  # ramped over half the steps
    assert [step for step, _ in events["eval/cam_miou"]] == [1, 2] and all(0 <= v <= 100 for _, v in events["eval/cam_miou"])
    assert [v for _, v in events["epoch/total"]] == pytest.approx([row["total"] for row in history])


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """The scalars of a TensorBoard folder: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_unknown_variant_is_a_clear_error(tiny_index, tmp_path):
    with pytest.raises(StageError, match="variant: unknown 'both'"):
        run(classifier_job(tiny_index, tmp_path, variant="both"))


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


# The stage's command line, stopped (SIGSTOP) by itself as soon as its checkpoint is renamed into place: the test
# then kills it at that point, whatever the machine's load
STOPPED_AT_CHECKPOINT = """
import os, runpy, signal, sys
checkpoint, replace = sys.argv.pop(1), os.replace
def replaced(src, dst, *args, **kwargs):
    replace(src, dst, *args, **kwargs)
    if os.fspath(dst) == checkpoint:
        os.kill(os.getpid(), signal.SIGSTOP)
os.replace = replaced
runpy.run_module("stages.train_classifier", run_name="__main__")
"""


def test_a_sigkilled_training_process_resumes_from_its_checkpoint(tiny_index, tmp_path):
    """The stage's command line, killed for real after its first epoch's checkpoint, then rerun."""
    cfg = classifier_cfg(epochs=4, batch_size=2)

    def job(name):
        return classifier_job(tiny_index, tmp_path, name, cfg, f"{name}.ckpt").to_json()

    subprocess.run([sys.executable, "-m", "stages.train_classifier", job("straight")], check=True, capture_output=True,
                   cwd=ROOT)
    proc = subprocess.Popen([sys.executable, "-c", STOPPED_AT_CHECKPOINT, str(tmp_path / "killed.ckpt"), job("killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), "the training ended before its first checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model.pt").exists()
    assert torch.load(tmp_path / "killed.ckpt", weights_only=True)["epoch"] == 1
    rerun = subprocess.run([sys.executable, "-m", "stages.train_classifier", job("killed")], check=True,
                           capture_output=True, text=True, cwd=ROOT)
    assert "resumed from" in rerun.stderr
    straight, _ = load_model(tmp_path / "straight" / "model.pt")
    resumed, _ = load_model(tmp_path / "killed" / "model.pt")
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_a_checkpoint_resumes_only_under_the_same_precision(tiny_index, monkeypatch, tmp_path):
    keys = []
    monkeypatch.setattr("stages.core.trainer.fit", lambda *a, **kw: keys.append(a[7]) or [])
    monkeypatch.setattr("stages.core.trainer.save_trained", lambda *a: None)
    for precision in ("fp32", "bf16", "fp32"):
        run(classifier_job(tiny_index, tmp_path, runtime={"precision": precision}))
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
    """Kill, change the image labels, rerun: the rerun equals a clean run on the new labels (each run's runtime
    seeds the model's initialisation afresh)."""
    labels = index_file(tiny_index, tmp_path)
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    with pytest.raises(Killed), pytest.MonkeyPatch.context() as mp:
        mp.setattr("stages.train_classifier.puzzle_step", killed_at(puzzle_step, 3))
        run(classifier_job(tiny_index, tmp_path, "old"))
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["epoch"] == 1
    changed = tiny_index.to_json()
    changed["labels"][ids[0]] = [c for c in range(1, 5) if c not in changed["labels"][ids[0]]][:1]
    write_json(labels, changed)
    with caplog.at_level("INFO", logger="stages"):
        run(classifier_job(tiny_index, tmp_path, "rerun"))
    assert any("not resuming from" in r.getMessage() for r in caplog.records)
    assert not any("resumed" in r.getMessage() for r in caplog.records)
    run(classifier_job(tiny_index, tmp_path, "clean", checkpoint="clean.pt"))
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


# --- One training step of each variant against the reference's train_classification_with_puzzle.py -------------
# Written here from the reference's script, independently of stages/ops/puzzle.py: its own tiling and merging by
# slicing, the reference's losses on the raw maps ('feature' level: no ReLU, no normalisation), the class mask of
# 'masking', and the linear alpha ramp.

class TinyCAMNet(torch.nn.Module):
    """Raw class maps at stride 4, with BatchNorm in training mode (whose batch statistics differ for the tiles)."""

    def __init__(self, classes=3):
        super().__init__()
        conv = lambda i, o: torch.nn.Conv2d(i, o, 3, stride=2, padding=1, bias=False)  # noqa: E731
        self.body = torch.nn.Sequential(conv(3, 8), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                        conv(8, 8), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.classifier = torch.nn.Conv2d(8, classes, 1, bias=False)

    def forward(self, x):
        return self.classifier(self.body(x))


def reference_tiles(x):
    """The 2x2 tiles, row by row, each tile's images together along the batch (tile_features, num_pieces=4)."""
    h, w = x.shape[2] // 2, x.shape[3] // 2
    return torch.cat([x[:, :, i * h:(i + 1) * h, j * w:(j + 1) * w] for i in range(2) for j in range(2)])


def reference_merge(maps, batch_size):
    """merge_features: the batch's four tiles' maps put back side by side, then row under row."""
    t = [maps[k * batch_size:(k + 1) * batch_size] for k in range(4)]
    return torch.cat([torch.cat([t[0], t[1]], dim=3), torch.cat([t[2], t[3]], dim=3)], dim=2)


def reference_step(model, x, y, loss_option, alpha_max, ramp, iteration, max_iteration):
    """The loss terms of one iteration of the reference's script; ``loss_option`` None is its
    train_classification.py (the baseline: the full image alone, no tiles)."""
    mlsm = torch.nn.MultiLabelSoftMarginLoss(reduction="none")
    gap = lambda a: a.reshape(a.shape[0], a.shape[1], -1).mean(-1)  # noqa: E731
    features = model(x)
    terms = {"cls": mlsm(gap(features), y).mean()}
    total = terms["cls"]
    if loss_option is None:
        return {**terms, "total": total}
    re_features = reference_merge(model(reference_tiles(x)), x.shape[0])
    if "pcl" in loss_option:
        terms["p_cls"] = mlsm(gap(re_features), y).mean()
        total = total + terms["p_cls"]
    if "re" in loss_option.split("_"):
        terms["re"] = (torch.abs(features - re_features) * y[:, :, None, None]).mean()
        alpha = min(alpha_max * iteration / (max_iteration * ramp), alpha_max)
        total = total + alpha * terms["re"]
    return {**terms, "total": total}


REFERENCE_OPTIONS = {"baseline": None, "pcls": "cl_pcl", "re": "cl_re", "puzzle": "cl_pcl_re"}


@pytest.mark.parametrize("variant", list(REFERENCE_OPTIONS))
@pytest.mark.parametrize("iteration", [3, 8])  # on the ramp (alpha 2.4) and after it (alpha 4)
def test_each_variants_step_gives_the_reference_scripts_loss_terms_and_gradients(variant, iteration):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 48)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # absent classes: masked out of L_re
    ours, ref = TinyCAMNet().train(), TinyCAMNet().train()
    ref.load_state_dict(ours.state_dict())
    terms = puzzle_step(ours, VARIANTS[variant], 4.0, 0.5)({"image": x, "label": y}, iteration, 10)
    expected = reference_step(ref, x, y, REFERENCE_OPTIONS[variant], 4.0, 0.5, iteration, 10)
    assert set(terms) == set(expected)
    for k in expected:
        assert torch.allclose(terms[k], expected[k], rtol=1e-5, atol=1e-7), (k, terms[k], expected[k])
    terms["total"].backward()
    expected["total"].backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name
    # the tiles go through the network in a forward of their own, as in the reference: BatchNorm's running
    # statistics see the full images, then (for every variant but the baseline) the tiles
    for (name, b), c in zip(ours.named_buffers(), ref.buffers()):
        assert torch.allclose(b.float(), c.float()), name


def test_without_l_pcls_the_tiles_learn_only_through_l_re():
    """re: the tiles' branch has no loss of its own; L_re's gradient reaches both branches (nothing is detached),
    so the gradient is that of L_cls plus alpha times L_re's, as the reference's."""
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    model = TinyCAMNet().train()
    terms = puzzle_step(model, VARIANTS["re"], 4.0, 0.5)({"image": x, "label": y}, 8, 10)
    params = list(model.parameters())
    g_total = torch.autograd.grad(terms["total"], params, retain_graph=True)
    g_cls = torch.autograd.grad(terms["cls"], params, retain_graph=True)
    g_re = torch.autograd.grad(terms["re"], params)
    for a, b, c in zip(g_total, g_cls, g_re):
        assert torch.allclose(a, b + 4.0 * c, rtol=1e-4, atol=1e-6)
    assert terms["re"] > 0 and any(c.abs().sum() > 0 for c in g_re)
