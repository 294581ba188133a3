"""DeepLabv3+'s multi-scale inference (shared by train_segmentation, predict_segmentation and segment) on a stand-in
network whose logits are its input's pixels, so that every resize, pad and crop shows in the output."""
import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from stages.data.transforms import resize_normalized
from stages.models.segmentation import multiscale_logits


class PerPixel(nn.Module):
    """Logits = twice the first two input channels, pixel by pixel: a pad adds nothing where the crop keeps."""

    def forward(self, x):
        return 2.0 * x[:, :2]


def test_a_scale_that_leaves_one_row_runs_on_one_row():
    # 2 rows at scale 0.5 is one row (padded to 16 for the network, cropped back), not two: the one row, resized to
    # the image's 2 rows, is the mean of both rows in each
    img = torch.randn(1, 3, 2, 40)
    for image, size in ((img, (1, 20)), (img.transpose(-1, -2), (20, 1))):
        expected = F.interpolate(2.0 * resize_normalized(image, size)[:, :2], size=image.shape[-2:], mode="bilinear",
                                 align_corners=False)
        torch.testing.assert_close(multiscale_logits(PerPixel(), image, [0.5], False, contextlib.nullcontext), expected)
