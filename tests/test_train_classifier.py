"""Classifier training: the artifact, and a killed run resuming to the same weights."""
import pytest
import torch

from conftest import train_cfg
from stages import StageError
from stages.data.datasets import TrainSamples
from stages.engine import fit
from stages.io import load_model
from stages.models.classifier import CAMClassifier
from stages.ops.puzzle import VARIANTS
from stages.train_classifier import puzzle_step, train_classifier


def classifier_cfg(**kw):
    return train_cfg(backbone="resnet18", pretrained=False, pretrained_path=None, alpha_max=4.0, alpha_ramp=0.5, **kw)


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
    assert state["classifier.weight"].shape == (4, 512, 1, 1)
    assert (tmp_path / "m" / "history.csv").read_text().splitlines()[0].startswith("epoch,lr,")


def test_unknown_variant_is_a_clear_error(tiny_index, cpu, tmp_path):
    with pytest.raises(StageError, match="variant: unknown 'both'"):
        train_classifier(tiny_index, [], "both", classifier_cfg(), cpu, tmp_path / "m.pt", tmp_path / "c.pt")


class Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_weights(tiny_index, cpu, tmp_path):
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    cfg = classifier_cfg(epochs=2)

    def run(checkpoint, kill_at=None):
        torch.manual_seed(0)
        model = CAMClassifier("resnet18", 4)
        data = TrainSamples([tiny_index.layout.image_path(i) for i in ids], cfg, 0,
                            labels=[tiny_index.labels[i] for i in ids], num_classes=4)
        step = puzzle_step(model, VARIANTS["puzzle"], 4.0, 0.5)

        def killable(batch, it, max_it):
            if it == kill_at:
                raise Killed
            return step(batch, it, max_it)

        fit(model, model.param_groups(cfg["lr"]), data, killable, cfg, cpu, checkpoint, "k", "test")
        return model.state_dict()

    straight = run(tmp_path / "a.pt")
    with pytest.raises(Killed):
        run(tmp_path / "b.pt", kill_at=3)  # two steps per epoch: killed in epoch 2
    assert torch.load(tmp_path / "b.pt", weights_only=False)["epoch"] == 1
    resumed = run(tmp_path / "b.pt")
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
