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


# -- training steps: the reference's loss terms, written from its scripts ----------------------------------------

def puzzle_terms(model, image, label, p_cls: bool = True, re: bool = True, alpha: float = 0.0) -> dict:
    """train_classification_with_puzzle.py: the raw class maps of the images and of their 2x2 tiles (the batch's
    tiles in one forward, tile by tile) put back side by side; MultiLabelSoftMargin of their global average pools
    (L_cls, L_p-cls) and the mean L1 distance of the two maps over the images' classes (L_re); total = L_cls + L_p-cls
    + alpha L_re. Without L_p-cls and L_re, train_classification.py (the full image alone)."""
    mlsm = torch.nn.MultiLabelSoftMarginLoss()
    features = model(image)
    terms = {"cls": mlsm(features.float().mean((2, 3)), label)}
    total = terms["cls"]
    if p_cls or re:
        b, h, w = image.shape[0], image.shape[2] // 2, image.shape[3] // 2
        tiles = torch.cat([image[:, :, i * h:(i + 1) * h, j * w:(j + 1) * w] for i in range(2) for j in range(2)])
        t = model(tiles).float()
        t = [t[k * b:(k + 1) * b] for k in range(4)]
        re_features = torch.cat([torch.cat([t[0], t[1]], 3), torch.cat([t[2], t[3]], 3)], 2)
        if p_cls:
            terms["p_cls"] = mlsm(re_features.mean((2, 3)), label)
            total = total + terms["p_cls"]
        if re:
            terms["re"] = ((features.float() - re_features).abs() * label[:, :, None, None]).mean()
            total = total + alpha * terms["re"]
    return {**terms, "total": total}


def deeplab_terms(model, image, mask) -> dict:
    """The reference's segmentation loss: cross-entropy of the logits, the 255 outline ignored."""
    return {"total": F.cross_entropy(model(image).float(), mask, ignore_index=255)}


def affinity_terms(model, image, mask, radius: int, eps: float = 1e-5) -> dict:
    """IRN's AffinityNet loss: the labels at the boundary map's size by PIL's nearest rule (each cell the centre
    pixel of its block); from the sources of IRN's crop (rows [0, h - r + 1), columns [r - 1, w - r + 1)), each pair
    within ``radius`` with both labels known is a background pair, a foreground pair (same class) or a negative
    one; -log(affinity) for the first two, -log(1 - affinity) for negatives; (bg/2 + fg/2 + neg)/2 of the means."""
    aff = path_affinity(model(image).float().sigmoid(), radius)
    h, w = aff.shape[-2:]
    big_h, big_w = mask.shape[-2:]
    rows = ((torch.arange(h, device=mask.device) + 0.5) * big_h / h).long()
    cols = ((torch.arange(w, device=mask.device) + 0.5) * big_w / w).long()
    label = mask[:, rows][:, :, cols]
    f = radius - 1
    src = label[:, : h - f, f: w - f]
    bg, fg, neg = [], [], []
    for k, (dy, dx) in enumerate(displacements(radius)):
        dst = label[:, dy: dy + h - f, f + dx: w - f + dx]
        a = aff[:, k, : h - f, f: w - f]
        known = (src != 255) & (dst != 255)
        bg.append(a[known & (src == dst) & (src == 0)])
        fg.append(a[known & (src == dst) & (src != 0)])
        neg.append(a[known & (src != dst)])
    bg, fg, neg = torch.cat(bg), torch.cat(fg), torch.cat(neg)
    terms = {"bg_pos": -torch.log(bg + eps).sum() / (len(bg) + eps), "fg_pos": -torch.log(fg + eps).sum() / (len(fg) + eps),
             "neg": -torch.log(1 + eps - neg).sum() / (len(neg) + eps)}
    return {**terms, "total": (terms["bg_pos"] / 2 + terms["fg_pos"] / 2 + terms["neg"]) / 2}


def train_step(model, terms, batch: dict, optimizer) -> list:
    """One step in fp32 on contiguous tensors: the loss ``terms(model, batch)``, its backward, ``optimizer``'s step;
    returns the terms' values before the step."""
    model.train()
    values = terms(model, batch)
    optimizer.zero_grad(set_to_none=True)
    values["total"].backward()
    optimizer.step()
    return [float(v.detach()) for v in values.values()]
