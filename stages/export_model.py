"""Rule export_model: the trained DeepLabv3+ as ONNX and TorchScript, with what a user needs to run it.

    model.onnx   input "image": float32 (batch, 3, height, width), RGB values 0..255; output "logits": float32
                 (batch, classes, height, width); batch, height and width free (the model pads to a multiple of 16
                 and crops back, and normalises with ImageNet's mean and std itself)
    model.ts     the same module in TorchScript (torch.jit.load)
    model.json   the classes (0 is background), the VOC palette, the normalisation inside the model, the input and
                 output rules, and where the model came from

One scale, no flip, no CRF: the run's predictions add those around the same network (stages/core/segmenter.py).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from stages.core.job import Job, main
from stages.data.transforms import MEAN, STD
from stages.models.segmentation import PAD_TO
from stages.utils.io import atomic_path, read_json, voc_palette, write_json

log = logging.getLogger("stages")

OPSET = 18


class Exported(nn.Module):
    """DeepLabv3+ on RGB images of any size: normalised, padded to a multiple of 16, cropped back."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        x = (image - self.mean) / self.std
        x = F.pad(x, (0, (PAD_TO - w % PAD_TO) % PAD_TO, 0, (PAD_TO - h % PAD_TO) % PAD_TO))
        return self.model(x)[..., :h, :w]


def exported(model_path: Path) -> tuple[Exported, dict]:
    from stages.core.runtime import make_runtime
    from stages.models.factory import load_deeplab

    meta = read_json(Path(model_path).with_suffix(".json"))
    model = load_deeplab(model_path, len(meta["classes"]), make_runtime("cpu", precision="fp32"))
    return Exported(model.float()).eval(), meta


def export_onnx(module: Exported, path: Path) -> None:
    example = torch.rand(1, 3, 2 * PAD_TO, 2 * PAD_TO) * 255
    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=PAD_TO // 2),
            3: torch.export.Dim("width", min=PAD_TO // 2)}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        torch.onnx.export(module, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                          dynamic_shapes={"image": dims}, opset_version=OPSET, dynamo=True, external_data=False,
                          verbose=False)


def export_torchscript(module: Exported, path: Path) -> None:
    example = torch.rand(1, 3, 2 * PAD_TO, 2 * PAD_TO) * 255
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns of the shape arithmetic, which it records as such
        traced = torch.jit.trace(module, example)
    with atomic_path(path) as tmp:
        traced.save(str(tmp))


def describe(meta: dict, model_path: Path) -> dict:
    palette = voc_palette()
    classes = ["background", *meta["classes"]]
    return {
        "classes": classes,
        "palette": [palette[3 * c:3 * c + 3] for c in range(len(classes))],
        "input": {"name": "image", "dtype": "float32", "shape": ["batch", 3, "height", "width"],
                  "values": "RGB, 0..255 (EXIF orientation applied); any height and width"},
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", len(classes), "height", "width"],
                   "classes": "argmax over axis 1: the class of each pixel (0 background)"},
        "normalisation": {"inside_the_model": True, "mean": MEAN.tolist(), "std": STD.tolist()},
        "inference": "one scale, no flip, no CRF",
        "opset": OPSET,
        "model": str(model_path), "encoder": meta["encoder"], "trained": {k: meta.get(k) for k in ("seed", "masks")},
    }


def export_model(model_path: Path, onnx: Path, torchscript: Path, sidecar: Path) -> None:
    module, meta = exported(model_path)
    export_onnx(module, onnx)
    export_torchscript(module, torchscript)
    write_json(sidecar, describe(meta, model_path))
    log.info("export_model: %s as %s and %s", model_path, onnx, torchscript)


def run(job: Job) -> None:
    export_model(job.input.model, job.output.onnx, job.output.torchscript, job.output.meta)


if __name__ == "__main__":
    main(run)
