"""DeepLabv3+: the model, training on masks, multi-scale prediction to palette PNGs."""
import contextlib

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import CLASSES, TINY, index_file, layout_of, train_cfg, training_job
from PIL import Image

from stages.core.runtime import make_runtime
from stages.data.transforms import MEAN, STD, normalize
from stages.data.voc import read_mask
from stages.image_labels import build_index
from stages.make_dataset import make_dataset
from stages.models.classifier import CAMClassifier
from stages.models.factory import build_deeplab
from stages.models.segmentation import create_deeplab, load_encoder_from_classifier, multiscale_logits
from stages.predict_segmentation import predict_segmentation
from stages.train_segmentation import run
from stages.utils.io import load_model, read_label_png, save_label_png, save_model


def seg_cfg(**kw):
    return train_cfg(**{"encoder": "resnet18", "pretrained": False, "pretrained_path": None, "init_from_classifier": False,
                        "upper_bound": True, "decoder_channels": 32, "aspp_rates": [6, 12, 18], "aspp_separable": False,
                        "frozen_bn": True, **kw})


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


def plain_multiscale_logits(model, photo: np.ndarray, scales, flip: bool) -> torch.Tensor:
    """The reference's multi-scale inference written out for one photo: per scale, the photo resized by PIL's bicubic
    filter and normalised, padded at the bottom-right to a multiple of 16 (never enlarged to it); one forward of it
    and one of its mirror image, the mirror's logits mirrored back; cropped, resized to the photo's size and summed
    over the scales."""
    h, w = photo.shape[:2]
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    total = torch.zeros(model.segmentation_head[0].out_channels, h, w)
    for s in scales:
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        resized = np.asarray(Image.fromarray(photo).resize((sw, sh), Image.BICUBIC), np.float64)
        x = torch.from_numpy(((resized - mean) / std).transpose(2, 0, 1)).float()
        x = F.pad(x, (0, -sw % 16, 0, -sh % 16))[None]
        y = model(x)
        if flip:
            y = y + model(x.flip(-1)).flip(-1)
        total += F.interpolate(y[..., :sh, :sw], size=(h, w), mode="bilinear", align_corners=False)[0]
    return total


@pytest.mark.parametrize("flip", [True, False])
def test_multiscale_logits_are_the_per_image_per_scale_sum(flip):
    """Fails if the mirror image's logits are not mirrored back, a scale is left out or resized otherwise, or the
    padding is not cropped off before the logits are enlarged."""
    torch.manual_seed(0)
    model = create_deeplab("resnet18", 3, decoder_channels=32).eval()
    for p in model.segmentation_head.parameters():  # logits that vary across the image: a mirror shows
        torch.nn.init.normal_(p)
    photos = np.random.default_rng(0).integers(0, 256, (2, 38, 54, 3), np.uint8)
    photos[:, :, :20] //= 4  # a dark left side: the photo is not its own mirror image
    scales = [0.5, 1.0, 1.5]
    images = torch.stack([torch.from_numpy((p - MEAN) / STD).permute(2, 0, 1).float() for p in photos])
    with torch.no_grad():
        out = multiscale_logits(model, images, scales, flip, contextlib.nullcontext)
        for got, photo in zip(out, photos):
            expected = plain_multiscale_logits(model, photo, scales, flip)
            assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_encoder_starts_from_the_classifier_backbone():
    cls = CAMClassifier("resnet18", 4)
    model = create_deeplab("resnet18", 5, decoder_channels=32)
    assert load_encoder_from_classifier(model, cls.state_dict()) > 50
    assert torch.equal(model.encoder.model.conv1.weight, cls.backbone.conv1.weight)


# Objects in their class's colour, large, without clutter: a DeepLabv3+ from scratch fits them in 40 steps
EASY = {**TINY, "p_class_colour": 1.0, "max_clutter": 0, "object_scale": [0.3, 0.45]}
SWAPPED = (1, 4)  # disc and cross: the two largest classes of EASY's training images


def class_iou(pred: np.ndarray, labels: np.ndarray, c: int) -> float:
    return np.sum((pred == c) & (labels == c)) / np.sum((pred == c) | (labels == c))


def predicted(model, index, ids) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {i: model(normalize(index.read_image(i))[None])[0].argmax(0).numpy() for i in ids}


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """DeepLabv3+ trained from scratch (fp32 or bf16, as ``precision: auto`` picks) on the ground truth of EASY's
    training images, and again on their masks with SWAPPED's classes exchanged, read from a pseudo-label folder."""
    tmp = tmp_path_factory.mktemp("learned")
    make_dataset(tmp / "VOC2012", CLASSES, EASY, seed=0)
    index, _ = build_index(layout_of(tmp / "VOC2012"))
    ids = index.ids(index.layout.split_file("train"))
    masks = {i: read_mask(index.layout.mask_path(i)) for i in ids}
    swap = np.arange(256, dtype=np.uint8)
    swap[list(SWAPPED)] = SWAPPED[::-1]
    for i in ids:
        save_label_png(tmp / "swapped" / f"{i}.png", swap[masks[i]])
    cfg = seg_cfg(epochs=20, lr=0.005, frozen_bn=False, dropout=[0.0, 0.0, 0.0])
    run(segmentation_job(index, tmp, cfg, "truth", "truth.pt"))
    run(segmentation_job(index, tmp, cfg, "swapped_model", "swapped.pt", masks=tmp / "swapped"))
    models = {}
    for name in ("truth", "swapped_model"):
        state, meta = load_model(tmp / name / "model.pt")
        models[name] = build_deeplab(meta["config"], index.num_classes).eval()
        models[name].load_state_dict(state)
    return index, ids, masks, swap, models, tmp


def test_deeplab_reproduces_the_labels_it_is_given_on_its_training_images(learned):
    """The mIoU against the training labels is far above the all-background prediction's (about 13 here), and a
    second run on the labels with two classes exchanged predicts them exchanged: the classes are learned from the
    labels given, not from the dataset's masks. Fails if the loss ignores the masks (predictions all background), or
    if the training reads the dataset's masks instead of the folder it is given (the exchanged classes not exchanged)."""
    index, ids, masks, swap, models, folder = learned
    assert load_model(folder / "truth" / "model.pt")[1]["masks"] == "ground_truth"
    assert load_model(folder / "swapped_model" / "model.pt")[1]["masks"] == str(folder / "swapped")
    truth, swapped = predicted(models["truth"], index, ids), predicted(models["swapped_model"], index, ids)
    labels, pixels = np.stack([masks[i] for i in ids]), np.stack([truth[i] for i in ids])
    present = [c for c in range(index.num_classes + 1) if (labels == c).any()]
    assert set(SWAPPED) < set(present)
    all_background = np.mean([class_iou(np.zeros_like(labels), labels, c) for c in present])
    miou = np.mean([class_iou(pixels, labels, c) for c in present])
    assert all_background < 0.2 and miou > all_background + 0.4, (miou, all_background)
    exchanged, kept = np.stack([swapped[i] for i in ids]), swap[labels]
    for c in SWAPPED:
        assert class_iou(pixels, labels, c) > 0.6
        assert class_iou(exchanged, kept, c) > 0.6 and class_iou(exchanged, labels, c) < 0.1, c


def test_predictions_are_the_argmax_of_the_multiscale_sum_at_each_images_size(learned, tmp_path):
    """predict_segmentation's PNGs, without the CRF, against the argmax of plain_multiscale_logits of the trained
    model: equal but at near ties of the float16 probabilities the CRF workers receive. Fails if the mirror image's
    logits are not mirrored back (the objects' edges move) or a scale is dropped."""
    index, ids, masks, _, models, folder = learned
    cfg = {"scales": [1.0, 0.5], "flip": True, "crf": {"iterations": 0}}
    predict_segmentation(index, ids, folder / "truth" / "model.pt", cfg, make_runtime("cpu", precision="fp32"),
                         tmp_path / "pred", processes=1)
    agree = []
    for i in ids:
        pred = read_label_png(tmp_path / "pred" / f"{i}.png")
        with torch.no_grad():
            probs = torch.softmax(plain_multiscale_logits(models["truth"], index.read_image(i), cfg["scales"], True), 0)
        top2 = probs.topk(2, dim=0).values
        clear = (top2[0] - top2[1] > 2e-3).numpy()
        assert pred.shape == index.size(i) and (pred[clear] == probs.argmax(0).numpy()[clear]).all(), i
        agree.append((np.mean(pred == masks[i]), np.mean(masks[i] == 0)))
    accuracy, background = np.mean(agree, axis=0)
    assert accuracy > background + 0.2  # the trained model's classes, not a constant map


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
