"""DeepLabv3+ from segmentation-models-pytorch with a timm encoder (``tu-<name>``) at output stride 16,
its head made the reference's: ASPP with ordinary convolutions at rates 6/12/18, GroupNorm, dropout in the
decoder, kaiming-normal initialisation, and a backbone whose BatchNorm statistics stay frozen."""
from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F

from stages import StageError
from stages.data.transforms import resize_normalized
from stages.models.backbone import check_backbone, create_backbone, pretrained_kwargs, reference_last_stage


def batchnorm_to_groupnorm(module: nn.Module, groups: int = 4) -> nn.Module:
    """Replace every BatchNorm2d below ``module`` by a GroupNorm of the same width (4 groups, as the reference head)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            g = groups if child.num_features % groups == 0 else 1
            setattr(module, name, nn.GroupNorm(g, child.num_features))
        else:
            batchnorm_to_groupnorm(child, groups)
    return module


class DeepLabV3Plus(smp.DeepLabV3Plus):
    """smp's DeepLabv3+ whose encoder BatchNorms, with ``frozen_bn``, always normalise with their running
    statistics (their scale and shift still train), as the reference's FixedBatchNorm backbone."""

    def __init__(self, frozen_bn: bool, **kwargs):
        super().__init__(**kwargs)
        self.frozen_bn = frozen_bn

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_bn:
            for m in self.encoder.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


# the reference's dropout: after the ASPP projection, then after each of the decoder's two convolutions
REFERENCE_DROPOUT = (0.5, 0.5, 0.1)


def reference_decoder_block(in_channels: int, channels: int, dropout) -> nn.Sequential:
    """The reference decoder after the skip concatenation: two 3x3 convolutions, each followed by its dropout."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(), nn.Dropout(dropout[0]),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(), nn.Dropout(dropout[1]),
    )


def create_deeplab(encoder: str, num_classes: int, decoder_channels: int = 256, pretrained: bool = False,
                   pretrained_path: str | None = None, aspp_rates=(6, 12, 18), aspp_separable: bool = False,
                   frozen_bn: bool = True, dropout=REFERENCE_DROPOUT) -> nn.Module:
    """DeepLabv3+ with ``num_classes`` outputs (background included) and the reference's head; ``dropout``: after
    the ASPP projection and after each of the decoder's two convolutions.

    smp's decoder differs from the reference's by a separable 3x3 convolution after the ASPP and one separable
    (not two ordinary) 3x3 convolution after the skip concatenation, without dropout: both are replaced."""
    check_backbone(encoder)
    kwargs = pretrained_kwargs(encoder, pretrained, pretrained_path)
    model = DeepLabV3Plus(
        frozen_bn,
        encoder_name=f"tu-{encoder}",
        encoder_weights=None,
        encoder_output_stride=16,
        decoder_channels=decoder_channels,
        decoder_atrous_rates=tuple(aspp_rates),
        decoder_aspp_separable=aspp_separable,
        decoder_aspp_dropout=dropout[0],
        classes=num_classes,
    )
    reference_last_stage(model.encoder.model)
    if kwargs["pretrained"]:
        weights = create_backbone(encoder, pretrained, pretrained_path).state_dict()
        model.encoder.model.load_state_dict(weights)
    decoder = model.decoder
    decoder.aspp = decoder.aspp[0]  # the ASPP alone (its 1x1 projection and dropout 0.5 included)
    decoder.block2 = reference_decoder_block(decoder.block1[0].out_channels + decoder_channels, decoder_channels,
                                             dropout[1:])
    batchnorm_to_groupnorm(decoder)
    for m in [*decoder.modules(), *model.segmentation_head.modules()]:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    return model


def load_encoder_from_classifier(model: nn.Module, classifier_state: dict) -> int:
    """Start the encoder from a trained classifier's backbone; returns the number of tensors copied."""
    prefix = "backbone."
    weights = {k[len(prefix):]: v for k, v in classifier_state.items() if k.startswith(prefix)}
    target = model.encoder.model.state_dict()
    matched = {k: v for k, v in weights.items() if k in target and target[k].shape == v.shape}
    if not matched:
        raise StageError("segmentation.init_from_classifier: the classifier's backbone does not match the encoder")
    model.encoder.model.load_state_dict(matched, strict=False)
    return len(matched)


def is_new(name: str) -> bool:
    """Parameters trained from scratch: the decoder and head, as opposed to the encoder's."""
    return not name.startswith("encoder.")


# the multiple of 16 smp's DeepLabv3+ needs at output stride 16
PAD_TO = 16


@torch.no_grad()
def multiscale_logits(model, images: torch.Tensor, scales, flip: bool, autocast) -> torch.Tensor:
    """Sum over scales (and flips) of the logits of a batch of same-size images (B, 3, H, W), at their size:
    (B, n_classes, H, W). Each scale runs the batch and its flips in one forward."""
    b, _, h, w = images.shape
    total = 0
    for s in scales:
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        # smp's decoder upsamples the stride-16 features 4x onto the stride-4 ones: sizes must be multiples of 16, so
        # the scaled image is padded and the logits cropped back (the reference's own DeepLabv3+ needs no padding);
        # an image under 16 pixels is padded too, never enlarged, as the exported model does it
        x = F.pad(resize_normalized(images, (sh, sw)), (0, (-sw) % PAD_TO, 0, (-sh) % PAD_TO))
        if flip:
            x = torch.cat([x, x.flip(-1)])
        with autocast():
            y = model(x).float()
        y = y[:b] + y[b:].flip(-1) if flip else y
        y = y[..., :sh, :sw]
        total = total + F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
    return total
