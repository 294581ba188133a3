"""timm backbones at output stride 16, with ImageNet weights from timm's hub or a local file."""
from __future__ import annotations

from pathlib import Path

import timm
import torch.nn as nn

from stages import StageError


def check_backbone(name: str) -> None:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0][:6]}*")[:6]
        hint = f" (similar: {', '.join(close)})" if close else " (e.g. resnet18, resnet50, resnest50d, resnest101e)"
        raise StageError(f"backbone: unknown timm model {name!r}{hint}")


def pretrained_kwargs(name: str, pretrained: bool, pretrained_path: str | None) -> dict:
    """timm arguments for the weights: a local file wins over the hub."""
    if pretrained_path:
        path = Path(pretrained_path)
        if not path.is_file():
            raise StageError(f"pretrained_path: {path} is not a file")
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path.resolve())}}
    return {"pretrained": bool(pretrained)}


def create_backbone(name: str, pretrained: bool = False, pretrained_path: str | None = None, output_stride: int = 16) -> nn.Module:
    """A timm ``features_only`` network returning the maps of all its stages."""
    check_backbone(name)
    kwargs = pretrained_kwargs(name, pretrained, pretrained_path)
    try:
        return timm.create_model(name, features_only=True, output_stride=output_stride, **kwargs)
    except StageError:
        raise
    except Exception as e:  # hub, network and file-format failures all surface here
        if kwargs["pretrained"]:
            raise StageError(
                f"backbone {name!r}: could not load ImageNet weights ({type(e).__name__}: {e}). "
                "Offline, download them elsewhere and set pretrained_path to the local .pth/.safetensors file, "
                "or set pretrained: false to train from scratch"
            ) from None
        raise
