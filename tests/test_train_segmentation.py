"""DeepLabv3+: the model, training on masks, multi-scale prediction to palette PNGs."""
import contextlib

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import index_file, train_cfg, training_job

from stages.models.classifier import CAMClassifier
from stages.models.factory import build_deeplab
from stages.models.segmentation import create_deeplab, load_encoder_from_classifier, multiscale_logits
from stages.predict_segmentation import predict_segmentation
from stages.train_segmentation import run
from stages.utils.io import load_model, read_label_png, save_label_png, save_model


def seg_cfg(**kw):
    return train_cfg(encoder="resnet18", pretrained=False, pretrained_path=None, init_from_classifier=False,
                     upper_bound=True, decoder_channels=32, aspp_rates=[6, 12, 18], aspp_separable=False,
                     frozen_bn=True, **kw)


def segmentation_job(index, tmp_path, cfg, name="seg", checkpoint="ck.pt", masks=None, **inputs):
    labels = tmp_path / "image_labels.json"
    labels = labels if labels.exists() else index_file(index, tmp_path)
    inputs = {**({"masks": masks} if masks is not None else {}), **inputs}
    return training_job("train_segmentation", labels, index.layout.split_file("train"), tmp_path / name, cfg,
                        tmp_path / checkpoint, wildcards={"seed": 0, "masks": "pseudo_labels" if masks else "ground_truth"},
                        **inputs)


def test_deeplab_has_a_groupnorm_head_and_full_resolution_output():
    model = create_deeplab("resnet18", 5, decoder_channels=32).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.decoder.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.decoder.modules())
    assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 5, 64, 96)


def reference_head_parameters(in_ch: int, low_ch: int, classes: int, c: int = 256) -> int:
    """Parameter count of the reference's ASPP + decoder (core/deeplab_utils.py) with GroupNorm, written out."""
    norm = 2 * c
    aspp = in_ch * c + 3 * (in_ch * c * 9) + in_ch * c + 5 * norm + 5 * c * c + norm  # 4 branches, pool, 1x1 project
    decoder = low_ch * 48 + 2 * 48 + (c + 48) * c * 9 + norm + c * c * 9 + norm + c * classes + classes
    return aspp + decoder


def test_deeplab_head_is_the_references():
    model = create_deeplab("resnet50", 21)
    head = [*model.decoder.parameters(), *model.segmentation_head.parameters()]
    assert sum(p.numel() for p in head) == reference_head_parameters(2048, 256, 21)
    atrous = [m for m in model.decoder.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [m.dilation[0] for m in atrous] == [6, 12, 18, 1, 1]  # ordinary convolutions: no depthwise groups
    assert all(m.groups == 1 for m in atrous)
    assert [m.p for m in model.decoder.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5, 0.1]
    assert {m.num_groups for m in model.decoder.modules() if isinstance(m, nn.GroupNorm)} == {4}


def test_deeplab_smp_settings_stay_reachable():
    model = create_deeplab("resnet18", 5, decoder_channels=32, aspp_rates=(12, 24, 36), aspp_separable=True)
    dilations = [m.dilation[0] for m in model.decoder.aspp.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert dilations == [12, 24, 36]


def test_deeplab_dropout_comes_from_the_config():
    model = build_deeplab(seg_cfg(dropout=[0.2, 0.0, 0.0]), 4)
    assert [m.p for m in model.decoder.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.0, 0.0]
    off = build_deeplab(seg_cfg(dropout=[0.0, 0.0, 0.0]), 4).train()  # frozen encoder BatchNorm, GroupNorm head
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(off(x), off(x))  # no dropout left: training-mode outputs repeat
    on = build_deeplab(seg_cfg(), 4).train()  # the schema's default is the reference's
    assert [m.p for m in on.decoder.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5, 0.1]
    assert not torch.equal(on(x), on(x))


def test_deeplab_head_is_kaiming_normal():
    torch.manual_seed(0)
    w = create_deeplab("resnet18", 5, decoder_channels=32).decoder.block2[0].weight  # fan_in (48 + 32) * 9 = 720
    assert w.std().item() == pytest.approx((2 / 720) ** 0.5, rel=0.03)


def test_frozen_bn_encoder_keeps_its_statistics_and_trains_its_affine():
    torch.manual_seed(0)
    model = create_deeplab("resnet18", 5, decoder_channels=32, frozen_bn=True)
    bn = model.encoder.model.bn1
    before = bn.running_mean.clone()
    x = torch.randn(2, 3, 32, 32) * 3 + 1
    model.train()
    assert model.decoder.training and not bn.training
    trained = model.encoder(x)[-1]
    assert torch.equal(bn.running_mean, before)
    assert torch.equal(trained, model.eval().encoder(x)[-1])
    model.train()
    model(x).sum().backward()
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    free = create_deeplab("resnet18", 5, decoder_channels=32, frozen_bn=False).train()
    free.encoder(x)
    assert not torch.equal(free.encoder.model.bn1.running_mean, before)


def test_multiscale_logits_handle_any_image_size():
    model = create_deeplab("resnet18", 3, decoder_channels=32).eval()
    images = torch.randn(2, 3, 50, 70)
    out = multiscale_logits(model, images, [0.5, 1.0, 1.5], True, contextlib.nullcontext)
    assert out.shape == (2, 3, 50, 70) and torch.isfinite(out).all()
    alone = multiscale_logits(model, images[1:], [0.5, 1.0, 1.5], True, contextlib.nullcontext)
    assert torch.allclose(out[1:], alone, atol=1e-4)  # a batch is its images, each as alone


def test_encoder_starts_from_the_classifier_backbone():
    cls = CAMClassifier("resnet18", 4)
    model = create_deeplab("resnet18", 5, decoder_channels=32)
    assert load_encoder_from_classifier(model, cls.state_dict()) > 50
    assert torch.equal(model.encoder.model.conv1.weight, cls.backbone.conv1.weight)


def test_train_on_ground_truth_then_predict(tiny_index, cpu, tmp_path):
    val_ids = tiny_index.ids(tiny_index.layout.split_file("val"))
    run(segmentation_job(tiny_index, tmp_path, seg_cfg(epochs=1)))
    _, meta = load_model(tmp_path / "seg" / "model.pt")
    assert meta["masks"] == "ground_truth" and meta["pretrained"] is None
    crf = {"iterations": 1, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3}, "bilateral": {"sxy": 80, "srgb": 13, "compat": 10}}
    predict_segmentation(tiny_index, val_ids, tmp_path / "seg" / "model.pt", {"scales": [1.0, 0.5], "flip": True, "crf": crf},
                         cpu, tmp_path / "pred", processes=2)
    for image_id in val_ids:
        pred = read_label_png(tmp_path / "pred" / f"{image_id}.png")
        assert pred.shape == (64, 64) and pred.max() <= tiny_index.num_classes


def test_train_on_pseudo_labels_reads_the_given_folder(tiny_index, cpu, tmp_path):
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    for image_id in ids:
        save_label_png(tmp_path / "pl" / f"{image_id}.png", np.zeros((64, 64), np.uint8))
    cls = tmp_path / "cls.pt"
    save_model(cls, CAMClassifier("resnet18", 4).state_dict(), {"config": {}})
    run(segmentation_job(tiny_index, tmp_path, seg_cfg(epochs=1), masks=tmp_path / "pl", classifier=cls))
    _, meta = load_model(tmp_path / "seg" / "model.pt")
    assert meta["masks"].endswith("pl") and meta["pretrained"] == f"classifier:{cls}"


class Killed(Exception):
    pass


def test_a_checkpoint_of_other_pseudo_labels_is_not_resumed(tiny_index, tmp_path, monkeypatch, caplog):
    """Kill after epoch 1, rewrite the pseudo labels, rerun: the rerun equals a clean run on the new labels."""
    import stages.train_segmentation as module

    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    cfg = seg_cfg(epochs=2)

    def write_labels(value):
        for image_id in ids:
            save_label_png(tmp_path / "pl" / f"{image_id}.png", np.full((64, 64), value, np.uint8))

    def train(name, checkpoint):
        run(segmentation_job(tiny_index, tmp_path, cfg, name, checkpoint, masks=tmp_path / "pl"))
        return load_model(tmp_path / name / "model.pt")[0]

    write_labels(0)
    make_step = module.segmentation_step

    def killed_in_epoch_2(model):
        step = make_step(model)

        def killable(batch, it, max_it):
            if it == 2:  # two steps per epoch
                raise Killed
            return step(batch, it, max_it)

        return killable

    monkeypatch.setattr(module, "segmentation_step", killed_in_epoch_2)
    with pytest.raises(Killed):
        train("killed", "ck.pt")
    monkeypatch.setattr(module, "segmentation_step", make_step)
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["epoch"] == 1
    write_labels(1)
    with caplog.at_level("INFO", logger="stages"):
        rerun = train("rerun", "ck.pt")
    assert any("not resuming from" in r.getMessage() for r in caplog.records)
    assert not any("resumed" in r.getMessage() for r in caplog.records)
    clean = train("clean", "clean.pt")
    for k in clean:
        assert torch.equal(clean[k], rerun[k]), k


def test_the_logits_and_step_compute_on_the_device_of_the_model(on_meta):
    """On a GPU every tensor of the multi-scale logits and the loss must be on it: the meta device stands in for one."""
    from stages.train_segmentation import segmentation_step

    with on_meta() as device:
        model = create_deeplab("resnet18", 3, decoder_channels=32).eval().to(device)
        out = multiscale_logits(model, torch.randn(1, 3, 50, 70, device=device), [0.5, 1.0], True, contextlib.nullcontext)
        assert out.device == device and out.shape == (1, 3, 50, 70)
        batch = {"image": torch.randn(2, 3, 32, 32, device=device), "mask": torch.randint(0, 3, (2, 32, 32), device=device)}
        terms = segmentation_step(model.train())(batch, 0, 10)
        terms["total"].backward()
        assert terms["total"].device == device
