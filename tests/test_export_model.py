"""Rule export_model: ONNX and TorchScript of the trained DeepLabv3+, equal to PyTorch at any size, and the README's
lines that use the ONNX file with onnxruntime and PIL alone."""
import json
import re

import numpy as np
import onnxruntime as ort
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import ROOT, run_stage
from PIL import Image

from stages.models.segmentation import create_deeplab
from stages.utils.io import load_model, save_model


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A DeepLabv3+ saved as train_segmentation saves it, exported by the rule's stage."""
    folder = tmp_path_factory.mktemp("export")
    cfg = {"encoder": "resnet10t", "decoder_channels": 16, "aspp_rates": [6, 12, 18], "aspp_separable": False,
           "frozen_bn": False, "pretrained": False, "pretrained_path": None}
    torch.manual_seed(0)
    model = create_deeplab("resnet10t", 5, 16, aspp_rates=(6, 12, 18), aspp_separable=False, frozen_bn=False)
    save_model(folder / "model.pt", model.state_dict(), {"stage": "train_segmentation", "encoder": "resnet10t", "seed": 0,
                                                       "masks": "pseudo_labels", "config": cfg,
                                                       "classes": ["disc", "square", "triangle", "cross"]})
    out = folder / "export"
    proc = run_stage("export_model", input={"model": folder / "model.pt"},
                     output={"onnx": out / "model.onnx", "torchscript": out / "model.ts", "meta": out / "model.json"})
    assert proc.returncode == 0, proc.stderr
    return folder / "model.pt", out


def smp_deeplab(model_path) -> nn.Module:
    """The trained network rebuilt from model.pt's weights with smp directly, its head made the reference's as the
    README describes it: smp's DeepLabv3+ at output stride 16, its ASPP without smp's separable convolution after
    it, two 3x3 convolutions with dropout after the skip concatenation, GroupNorm of 4 groups for every BatchNorm of
    the decoder, the encoder's last stage undilated. Loaded strictly: a weight of another shape or name fails."""
    state, meta = load_model(model_path)
    cfg, c = meta["config"], meta["config"]["decoder_channels"]
    model = smp.DeepLabV3Plus(encoder_name=f"tu-{cfg['encoder']}", encoder_weights=None, encoder_output_stride=16,
                              decoder_channels=c, decoder_atrous_rates=tuple(cfg["aspp_rates"]),
                              decoder_aspp_separable=cfg["aspp_separable"], classes=len(meta["classes"]) + 1)
    for conv in model.encoder.model.layer4.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
            conv.dilation, conv.padding = (1, 1), (1, 1)
    decoder = model.decoder
    decoder.aspp = decoder.aspp[0]
    skip = decoder.block1[0].out_channels
    decoder.block2 = nn.Sequential(nn.Conv2d(skip + c, c, 3, padding=1, bias=False), nn.GroupNorm(4, c), nn.ReLU(),
                                   nn.Dropout(0.5), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.GroupNorm(4, c),
                                   nn.ReLU(), nn.Dropout(0.1))
    for parent in list(decoder.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.GroupNorm(4, child.num_features))
    model.load_state_dict(state)
    return model.eval()


def oracle_logits(model_path, image: torch.Tensor) -> torch.Tensor:
    """What the exported model must compute from RGB values 0..255 (B, 3, H, W): ImageNet's normalisation, zeros
    padded at the bottom-right up to a multiple of 16, the network of :func:`smp_deeplab`, cropped back."""
    h, w = image.shape[-2:]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    x = F.pad((image - mean) / std, (0, -w % 16, 0, -h % 16))
    with torch.no_grad():
        return smp_deeplab(model_path)(x)[..., :h, :w]


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 75, 130), (1, 3, 33, 47)])
def test_onnx_and_torchscript_equal_the_trained_network_at_any_size_and_batch(export, shape):
    """Against the network rebuilt with smp from the weights train_segmentation saved (:func:`oracle_logits`), not
    against the module that was exported. Fails if the export normalises, pads or crops otherwise, or loses a layer
    of the head."""
    model, out = export
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 255
    expected = oracle_logits(model, x).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"image": x.numpy()})[0]
    assert logits.shape == expected.shape == (shape[0], 5, *shape[2:])
    assert np.abs(logits - expected).max() < 1e-4
    with torch.no_grad():
        assert torch.equal(torch.jit.load(str(out / "model.ts"))(x), torch.from_numpy(expected))


def test_the_sidecar_says_how_to_use_the_model(export):
    _, out = export
    meta = json.loads((out / "model.json").read_text())
    assert meta["classes"] == ["background", "disc", "square", "triangle", "cross"]
    assert meta["palette"][:3] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]  # VOC's
    assert meta["input"]["name"] == "image" and meta["output"]["name"] == "logits"
    assert meta["normalisation"]["inside_the_model"] is True and len(meta["normalisation"]["mean"]) == 3


def test_the_readmes_lines_segment_a_photo_with_onnxruntime_and_pil_alone(export, tmp_path, monkeypatch):
    """The Python of README's "Use the trained model", run as written on the exported files."""
    model, out = export
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Use the trained model.*?```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12 and "torch" not in code.replace("onnxruntime", "")
    photo = np.random.default_rng(0).integers(0, 255, (48, 70, 3), np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=100)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx").symlink_to(out / "model.onnx")
    (tmp_path / "model.json").symlink_to(out / "model.json")
    exec(compile(code, "README.md", "exec"), {})
    with Image.open(tmp_path / "photo.png") as png:
        mask = np.array(png)
    rgb = np.array(Image.open(tmp_path / "photo.jpg").convert("RGB"), np.float32)
    logits = oracle_logits(model, torch.from_numpy(rgb).permute(2, 0, 1)[None])[0]
    top2 = logits.topk(2, dim=0).values
    differ = mask != logits.argmax(0).numpy()
    assert mask.shape == (48, 70) and not (differ & (top2[0] - top2[1] > 1e-3).numpy()).any()  # only at near ties


@pytest.mark.parametrize("side", [1, 7, 15, 16, 17])
def test_the_exported_model_and_the_run_agree_on_images_under_16_pixels(export, side):
    """One rule for both: an image under smp's multiple of 16 is padded, never enlarged, by the run's inference at
    scale 1 (multiscale_logits) as by the exported model (0% argmax agreement at 1x1 when the run enlarged it)."""
    from stages.core.runtime import make_runtime
    from stages.data.transforms import normalize
    from stages.models.factory import load_deeplab
    from stages.models.segmentation import multiscale_logits

    model, out = export
    rt = make_runtime("cpu", precision="fp32")
    image = (np.random.default_rng(side).random((side, side + 2, 3)) * 255).astype(np.uint8)
    run = multiscale_logits(load_deeplab(model, 4, rt), normalize(image)[None], [1.0], False, rt.autocast)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx = session.run(["logits"], {"image": image.transpose(2, 0, 1)[None].astype(np.float32)})[0]
    assert onnx.shape == tuple(run.shape) == (1, 5, side, side + 2)
    np.testing.assert_allclose(onnx, run.numpy(), atol=1e-3)
