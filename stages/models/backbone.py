"""timm backbones at output stride 16, with ImageNet weights from timm's hub or a local file."""
from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
import timm
import torch.nn as nn
from timm.models.resnest import ResNestBottleneck
from timm.models.resnet import BasicBlock, Bottleneck

from stages import StageError

# the files timm looks for in a model's hub repository, in its order
HUB_FILES = ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")


def check_backbone(name: str) -> None:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0][:6]}*")[:6]
        hint = f" (similar: {', '.join(close)})" if close else " (e.g. resnet18, resnet50, resnest50d, resnest101e)"
        raise StageError(f"backbone: unknown timm model {name!r}{hint}")


def cached_hub_weights(name: str) -> str | None:
    """The local copy of a model's hub weights, if an earlier run downloaded them."""
    cfg = timm.models.get_pretrained_cfg(name)
    repo = cfg.hf_hub_id if cfg is not None else None
    if not repo:
        return None
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else HUB_FILES
    for filename in files:
        path = huggingface_hub.try_to_load_from_cache(repo, filename)
        if isinstance(path, str):
            return path
    return None


def hub_reachable(timeout: float = 5.0) -> bool:
    """One TCP connect to the hub: offline, huggingface_hub would retry for about a minute per file."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(huggingface_hub.constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def pretrained_kwargs(name: str, pretrained: bool, pretrained_path: str | None) -> dict:
    """timm arguments for the weights: a local file wins over the hub cache, which wins over a download.

    Called when a model is built, before any training: unobtainable weights stop the stage at once."""
    if pretrained_path:
        path = Path(pretrained_path)
        if not path.is_file():
            raise StageError(f"pretrained_path: {path} is not a file")
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path.resolve())}}
    if not pretrained:
        return {"pretrained": False}
    cached = cached_hub_weights(name)
    if cached:
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": cached}}
    if not hub_reachable():
        raise StageError(
            f"backbone {name!r}: no ImageNet weights: {huggingface_hub.constants.ENDPOINT} is unreachable and they are "
            f"not in the local hub cache. Download them where there is network (timm.create_model({name!r}, "
            "pretrained=True) fills the cache; or save the state_dict to a .pth/.safetensors file) and set "
            "pretrained_path to that file, or set pretrained: false to train from scratch"
        )
    return {"pretrained": True}


def weights_tag(name: str, pretrained: bool, pretrained_path: str | None = None) -> str | None:
    """The exact weights a backbone starts from, for its model's sidecar: timm's ``<arch>.<tag>`` (a name without a
    tag resolves to timm's default: plain ``resnet50`` is ``resnet50.a1_in1k``, not torchvision's ``tv_in1k``), the
    local file, or None for a random start."""
    if pretrained_path:
        return str(Path(pretrained_path).resolve())
    if not pretrained:
        return None
    arch, _ = timm.models.split_model_name_tag(name)
    cfg = timm.models.get_pretrained_cfg(name)
    return f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else name


def reference_last_stage(model: nn.Module) -> nn.Module:
    """A timm ResNet or ResNeSt whose last stage runs at stride 1 (output stride 16), made to compute as the
    reference's: a ResNet's last stage without dilation (the reference only drops its stride); a ResNeSt's first
    block of it with the 3x3 average pool (stride 1) after its split-attention convolution and no pool in its
    shortcut (timm: no pool in the main branch, a 2x2 one in the shortcut). Neither holds weights: pretrained
    weights load as before. Other networks are returned as they are."""
    stage = getattr(model, "layer4", None)
    if stage is None or not len(stage):
        return model
    first = stage[0]
    if isinstance(first, ResNestBottleneck):
        pool = first.downsample[0] if first.downsample is not None else None
        if isinstance(pool, nn.AvgPool2d) and _pair(pool.stride) == (1, 1):
            first.downsample[0] = nn.Identity()
            first.avd_last = nn.AvgPool2d(3, 1, padding=1)
    elif isinstance(first, (BasicBlock, Bottleneck)):
        for conv in stage.modules():
            if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.dilation != (1, 1):
                conv.dilation, conv.padding = (1, 1), (1, 1)
    return model


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def create_backbone(name: str, pretrained: bool = False, pretrained_path: str | None = None, output_stride: int = 16) -> nn.Module:
    """A timm ``features_only`` network returning the maps of all its stages, its last stage as the reference's
    (:func:`reference_last_stage`)."""
    check_backbone(name)
    kwargs = pretrained_kwargs(name, pretrained, pretrained_path)
    try:
        return reference_last_stage(timm.create_model(name, features_only=True, output_stride=output_stride, **kwargs))
    except Exception as e:  # hub, network and file-format failures all surface here
        if kwargs["pretrained"]:
            raise StageError(
                f"backbone {name!r}: could not load ImageNet weights ({type(e).__name__}: {e}). "
                "Offline, download them elsewhere and set pretrained_path to the local .pth/.safetensors file, "
                "or set pretrained: false to train from scratch"
            ) from None
        raise
