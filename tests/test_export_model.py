"""Rule export_model: ONNX and TorchScript of the trained DeepLabv3+, equal to PyTorch at any size, and the README's
lines that use the ONNX file with onnxruntime and PIL alone."""
import json
import re

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT, run_stage
from PIL import Image

from stages.export_model import exported
from stages.models.segmentation import create_deeplab
from stages.utils.io import save_model


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


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 75, 130), (1, 3, 33, 47)])
def test_onnx_and_torchscript_equal_pytorch_at_any_size_and_batch(export, shape):
    model, out = export
    module, _ = exported(model)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        expected = module(x).numpy()
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
    module, _ = exported(model)
    with torch.no_grad():
        rgb = np.array(Image.open(tmp_path / "photo.jpg").convert("RGB"), np.float32)
        logits = module(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0]
    top2 = logits.topk(2, dim=0).values
    differ = mask != logits.argmax(0).numpy()
    assert mask.shape == (48, 70) and not (differ & (top2[0] - top2[1] > 1e-3).numpy()).any()  # only at near ties
