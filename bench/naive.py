"""Reference-style versions of the hot stages, written the way the paper's code works.

One image at a time, fp32, a PIL resize of the photo per scale, the dense HW x HW random-walk matrix
squared ``exp_times`` times (IRN's ``to_transition_matrix``), dense CRF in one process.
They are deliberately separate from stages/: the benchmark checks the project against them.
"""
from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
import torch
import torch.nn.functional as F
from PIL import Image
from pydensecrf.utils import unary_from_labels

from stages.data.transforms import normalize
from stages.ops.affinity import displacements, path_affinity


def pil_bicubic(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference's resize of an 8-bit RGB photo to ``size`` (h, w): PIL's bicubic filter."""
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BICUBIC))


@torch.no_grad()
def cams(model, images, keys, scales, flip: bool = True):
    """Puzzle-CAM's make_cam loop: per image, per scale, the photo resized by PIL and one forward of it and its
    flip; each scale's map enlarged to the image's size rounded up to 16 and cropped (and to stride 4)."""
    device = next(model.parameters()).device
    out = []
    for img, k in zip(images, keys):
        h, w = img.shape[:2]
        s4 = ((h + 3) // 4, (w + 3) // 4)
        up = (16 * ((h + 15) // 16), 16 * ((w + 15) // 16))
        full, low = 0, 0
        for s in scales:
            x = normalize(pil_bicubic(img, (round(h * s), round(w * s))))
            x = (torch.stack([x, x.flip(-1)]) if flip else x[None]).to(device)
            a = F.relu(model(x))
            a = (a[0] + a[1].flip(-1) if flip else a[0])[None]
            full = full + F.interpolate(a, size=up, mode="bilinear", align_corners=False)[0, :, :h, :w]
            low = low + F.interpolate(a, size=s4, mode="bilinear", align_corners=False)[0]
        idx = torch.as_tensor(k) - 1
        full, low = full[idx].cpu(), low[idx].cpu()
        out.append((full / (F.adaptive_max_pool2d(full, (1, 1)) + 1e-5), low / (F.adaptive_max_pool2d(low, (1, 1)) + 1e-5)))
    return out


def dense_affinity(boundary: torch.Tensor, radius: int) -> torch.Tensor:
    """The symmetric (HW, HW) affinity matrix of a (H, W) boundary map, ones on the diagonal."""
    h, w = boundary.shape
    hw = h * w
    aff = torch.eye(hw, dtype=boundary.dtype, device=boundary.device)
    half = path_affinity(boundary[None], radius)[0]
    ys, xs = torch.meshgrid(*(torch.arange(n, device=boundary.device) for n in (h, w)), indexing="ij")
    for i, (dy, dx) in enumerate(displacements(radius)):
        inside = (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
        src = (ys * w + xs)[inside]
        dst = ((ys + dy) * w + xs + dx)[inside]
        aff[src, dst] = half[i][inside]
        aff[dst, src] = half[i][inside]
    return aff


def to_transition_matrix(affinity: torch.Tensor, beta: float, times: int) -> torch.Tensor:
    """IRN: column-normalised affinity^beta, squared ``times`` times."""
    scaled = torch.pow(affinity, beta)
    trans = scaled / torch.sum(scaled, dim=0, keepdim=True)
    for _ in range(times):
        trans = torch.matmul(trans, trans)
    return trans


def random_walk(seeds: torch.Tensor, boundary: torch.Tensor, radius: int, beta: float, exp_times: int) -> torch.Tensor:
    """IRN's propagate_to_edge: (K, H, W) seeds times the dense transition matrix."""
    k, h, w = seeds.shape
    trans = to_transition_matrix(dense_affinity(boundary, radius), beta, exp_times)
    x = seeds * (1 - boundary)
    return torch.matmul(x.reshape(k, h * w), trans).reshape(k, h, w)


def crf_inference_label(img: np.ndarray, labels: np.ndarray, n_labels: int, t: int = 10, gt_prob: float = 0.7) -> np.ndarray:
    """IRN's crf_inference_label, with its fixed kernels."""
    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_labels(labels.ravel(), n_labels, gt_prob=gt_prob, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(img)), compat=10)
    q = d.inference(t)
    return np.argmax(np.array(q).reshape((n_labels, h, w)), axis=0)


@torch.no_grad()
def segmentation_logits(model, images, scales, flip: bool = True):
    """Per image, per scale: PIL resize of the photo, pad to a multiple of 16, the image and its flip in fp32."""
    device = next(model.parameters()).device
    out = []
    for img in images:
        h, w = img.shape[:2]
        total = 0
        for s in scales:
            sh, sw = max(16, round(h * s)), max(16, round(w * s))
            x = F.pad(normalize(pil_bicubic(img, (sh, sw))), (0, (-sw) % 16, 0, (-sh) % 16))
            x = (torch.stack([x, x.flip(-1)]) if flip else x[None]).to(device)
            y = model(x)
            y = (y[:1] + y[1:].flip(-1) if flip else y)[..., :sh, :sw]
            total = total + F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)[0]
        out.append(total.cpu())
    return out
