"""The measured cases: each hot stage as the project runs it and as the naive reference does.

A case builds its inputs in ``setup`` (not timed), then ``project`` and ``naive`` each map the
state to comparable outputs; ``compare`` gives their deviation, checked against ``tolerance``.
"""
from __future__ import annotations

import copy
import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pipeline.config import run_config
from torch.utils.flop_counter import FlopCounterMode

from bench import naive
from bench.inputs import NUM_CLASSES, noisy_labels, samples
from stages.core.engine import make_sgd
from stages.core.parallel import imap
from stages.core.runtime import make_runtime, resolve_precision, seed_everything
from stages.core.segmenter import BATCH_SIZE as SEGMENTER_BATCH
from stages.core.segmenter import segment
from stages.data.datasets import TrainSamples, epoch_loader
from stages.data.synthetic import make_sample
from stages.data.transforms import normalize
from stages.make_cams import BATCH_SIZE, batched_cams
from stages.models.affinity import AffinityNet
from stages.models.classifier import CAMClassifier
from stages.models.segmentation import create_deeplab, multiscale_logits
from stages.ops.crf import crf_labels
from stages.ops.puzzle import VARIANTS
from stages.ops.random_walk import random_walk
from stages.train_affinity import affinity_recipe, affinity_step
from stages.train_classifier import classifier_recipe, puzzle_step
from stages.train_segmentation import segmentation_recipe, segmentation_step
from stages.utils.io import save_label_png

CAM_SCALES = (1.0, 0.5, 1.5, 2.0)
SEG_SCALES = (0.5, 1.0, 1.5)
RW = {"radius": 5, "beta": 10, "exp_times": 8}
# IRN's crf_inference_label settings, which the naive version hard-codes
CRF = {"iterations": 10, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3}, "bilateral": {"sxy": 50, "srgb": 5, "compat": 10}}
# a CRF is cheap: enough images that the pool's start-up weighs about as little as in a rule,
# which labels a whole split in one pool
CRF_IMAGES_PER_N = 8


@dataclass(frozen=True)
class Settings:
    device: str = "cpu"
    backbone: str = "resnet50"
    height: int = 375
    width: int = 500
    n: int = 2
    crop: int = 512
    rw_height: int = 48
    rw_width: int = 64
    threads: int = 2
    seed: int = 0
    precision: str = "auto"  # the project's; the naive versions compute in fp32


def precision(s: Settings) -> str:
    return resolve_precision(s.precision, torch.device(s.device))


def case_runtime(s: Settings, autotune: bool = False):
    """The project's runtime; ``autotune`` for the training steps, as the training stages ask for it."""
    return make_runtime(s.device, s.seed, precision=s.precision, autotune=autotune)


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Settings], dict]
    project: Callable[[dict], list]
    naive: Callable[[dict], list] | None
    compare: Callable[[list, list], float] | None
    tolerance: Callable[[Settings], float] | None
    count: Callable[[Settings], int]
    size: Callable[[Settings], str]
    deviation: str = ""  # what ``compare`` measures
    naive_note: str = ""
    cpu_only: bool = False  # runs on the CPU whatever the device (memory is then the CPU's)


CASES: dict[str, Case] = {}


def register(case: Case) -> Case:
    CASES[case.name] = case
    return case


def image_size(s: Settings) -> str:
    return f"{s.width}x{s.height}"


def crop_size(s: Settings) -> str:
    return f"{s.crop}x{s.crop} crops"


def n_images(s: Settings) -> int:
    return s.n


def max_abs(a: list, b: list) -> float:
    return max(float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max()) for x, y in zip(a, b))


def max_rel(a: list, b: list) -> float:
    """Largest difference relative to the larger magnitude of each pair of outputs."""
    return max(float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max()
                     / max(np.abs(x).max(), np.abs(y).max(), 1e-12)) for x, y in zip(a, b))


def half_or(fp32_tolerance: float, half_tolerance: float):
    """The project's half-precision autocast (bf16; fp16, with more mantissa bits, stays within bf16's tolerance)
    deviates more from the naive fp32 than its fp32 does."""
    return lambda s: fp32_tolerance if precision(s) == "fp32" else half_tolerance


# -- training steps -----------------------------------------------------------------------------

def train_batch(s: Settings) -> dict:
    data = samples(s.n, s.crop, s.crop, s.seed)
    label = torch.zeros(s.n, NUM_CLASSES)
    for i, d in enumerate(data):
        label[i, [k - 1 for k in d.keys]] = 1.0
    return {"image": torch.stack([normalize(d.image) for d in data]), "label": label,
            "mask": torch.from_numpy(np.stack([d.mask for d in data]).astype(np.int64))}


def one_step(model, step, batch, rt) -> list:
    """One SGD step as stages.core.engine.fit runs it: the runtime's placement and autocast."""
    model = rt.place(copy.deepcopy(model))  # both versions start from the same weights
    model.train()
    optimizer = make_sgd(model.parameters(), {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4})
    batch = {k: v.to(rt.device) for k, v in batch.items()}
    torch.manual_seed(rt.seed)  # the same dropout masks for both versions
    with rt.autocast():
        terms = step(model, batch)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    if rt.cuda:
        torch.cuda.synchronize()
    return [np.array([float(v.detach()) for v in terms.values()])]


def naive_step(state, terms) -> list:
    """The same step with the reference's loss terms (bench/naive.py), in fp32 on contiguous tensors."""
    rt = state["rt"]
    model = copy.deepcopy(state["model"]).to(rt.device)
    batch = {k: v.to(rt.device) for k, v in state["batch"].items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    torch.manual_seed(rt.seed)
    out = naive.train_step(model, terms, batch, optimizer)
    if rt.cuda:
        torch.cuda.synchronize()
    return [np.array(out)]


def train_case(name: str, build, make_step, naive_terms) -> Case:
    def setup(s):
        seed_everything(s.seed)
        return {"model": build(s), "batch": train_batch(s), "rt": case_runtime(s, autotune=True)}

    return Case(name, setup, lambda state: one_step(state["model"], make_step, state["batch"], state["rt"]),
                functools.partial(naive_step, terms=naive_terms), max_rel, half_or(1e-4, 3e-2), n_images, crop_size,
                "relative difference of the loss terms", "the reference's loss terms, fp32, contiguous")


def classifier_step(model, batch):
    return puzzle_step(model, VARIANTS["puzzle"], 4.0, 0.5)(batch, 0, 100)


register(train_case("classifier training step (puzzle)",
                    lambda s: CAMClassifier(s.backbone, NUM_CLASSES), classifier_step,
                    lambda m, b: naive.puzzle_terms(m, b["image"], b["label"], alpha=0.0)))  # alpha at iteration 0


def deeplab_step(model, batch):
    return segmentation_step(model)(batch, 0, 100)


register(train_case("DeepLabv3+ training step",
                    lambda s: create_deeplab(s.backbone, NUM_CLASSES + 1, 256), deeplab_step,
                    lambda m, b: naive.deeplab_terms(m, b["image"], b["mask"])))


def affinity_train_setup(s: Settings) -> dict:
    seed_everything(s.seed)
    batch = train_batch(s)
    rng = np.random.default_rng(s.seed)
    batch["mask"] = torch.where(torch.from_numpy(rng.random(batch["mask"].shape) < 0.3), 255, batch["mask"])
    return {"model": AffinityNet(s.backbone), "batch": batch, "rt": case_runtime(s, autotune=True)}


register(Case("AffinityNet training step", affinity_train_setup,
              lambda st: one_step(st["model"], lambda m, b: affinity_step(m, 10)(b, 0, 100), st["batch"], st["rt"]),
              None, None, None, n_images, crop_size))


# -- CAM generation -----------------------------------------------------------------------------

def model_flops(model, shapes) -> int:
    """FLOPs of one forward per input shape, counted on a meta-device copy (nothing computed)."""
    meta = copy.deepcopy(model).to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        for shape in shapes:
            meta(torch.empty(shape, device="meta"))
    return counter.get_total_flops()


def cam_images(s: Settings) -> int:
    """At least one full batch of make_cams, so that its batching is what is measured."""
    return max(s.n, BATCH_SIZE)


def cam_setup(s: Settings) -> dict:
    seed_everything(s.seed)
    model = CAMClassifier(s.backbone, NUM_CLASSES).eval()
    shapes = [(2, 3, max(1, round(s.height * sc)), max(1, round(s.width * sc))) for sc in CAM_SCALES]
    return {"model": model, "data": samples(cam_images(s), s.height, s.width, s.seed), "rt": case_runtime(s),
            "flops": model_flops(model, shapes) * cam_images(s)}


def cam_project(state) -> list:
    """make_cams' loop without the files: same-size batches through multiscale_cams."""
    rt = state["rt"]
    model = rt.inference_model(copy.deepcopy(state["model"]))
    images = [(i, d.image) for i, d in enumerate(state["data"])]
    classes = {i: d.keys for i, d in enumerate(state["data"])}
    out = [pair for _, _, pair in batched_cams(model, images, classes, {"scales": CAM_SCALES, "flip": True}, rt)]
    return [t.numpy() for pair in out for t in pair]


def cam_naive(state) -> list:
    model = copy.deepcopy(state["model"]).to(state["rt"].device)
    out = naive.cams(model, [d.image for d in state["data"]], [d.keys for d in state["data"]], CAM_SCALES)
    return [t.numpy() for pair in out for t in pair]


# PIL antialiases the 0.5 downscale, torch's bilinear resize does not: that alone moves the CAMs by a few
# hundredths (tests/test_bench.py shows agreement to 1e-4 over the scales where the two resizes agree)
register(Case("CAM generation (4 scales x flip)", cam_setup, cam_project, cam_naive, max_abs,
              half_or(5e-2, 8e-2), cam_images, image_size,
              "max |difference| of the max-normalised CAMs (PIL antialiases the 0.5 downscale, torch does not)",
              "per image, fp32, PIL bicubic resize of the photo per scale"))


# -- random walk --------------------------------------------------------------------------------

def walk_inputs(s: Settings, h: int, w: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(seeds (K, h, w), boundary (h, w)) pairs from the synthetic masks at stride-4 size."""
    out = []
    for d in samples(s.n, s.height, s.width, s.seed):
        mask = torch.from_numpy(d.mask).long()[None, None]
        small = F.interpolate(mask.float(), size=(h, w), mode="nearest")[0, 0].long()
        edge = (small != torch.roll(small, 1, 0)) | (small != torch.roll(small, 1, 1))
        boundary = F.avg_pool2d(edge.float()[None, None], 3, 1, 1)[0, 0].clamp(0, 1) * 0.9 + 0.05
        seeds = torch.stack([(small == k).float() for k in d.keys])
        seeds = F.avg_pool2d(seeds[None], 5, 1, 2)[0] * torch.rand(seeds.shape, generator=torch.Generator().manual_seed(s.seed))
        out.append((seeds, boundary))
    return out


def walk_setup(s: Settings, full: bool) -> dict:
    h, w = ((s.height + 3) // 4, (s.width + 3) // 4) if full else (s.rw_height, s.rw_width)
    return {"pairs": walk_inputs(s, h, w), "device": torch.device(s.device)}


def walk(fn, state) -> list:
    out = []
    for seeds, boundary in state["pairs"]:
        rw = fn(seeds.to(state["device"]), boundary.to(state["device"]), RW["radius"], RW["beta"], RW["exp_times"])
        out.append((rw / (rw.max() + 1e-5)).cpu().numpy())
    return out


register(Case("random walk", functools.partial(walk_setup, full=False), functools.partial(walk, random_walk),
              functools.partial(walk, naive.random_walk), max_abs, lambda s: 1e-3, n_images,
              lambda s: f"{s.rw_width}x{s.rw_height} maps", "max |difference| of the maps divided by their maximum",
              "dense HW x HW matrix squared 8 times"))
register(Case("random walk (VOC stride-4 size)", functools.partial(walk_setup, full=True),
              functools.partial(walk, random_walk), None, None, None, n_images,
              lambda s: f"{(s.width + 3) // 4}x{(s.height + 3) // 4} maps"))


# -- dense CRF ----------------------------------------------------------------------------------

def crf_setup(s: Settings) -> dict:
    rng = np.random.default_rng(s.seed)
    jobs = []
    for d in samples(s.n * CRF_IMAGES_PER_N, s.height, s.width, s.seed):
        labels, n_labels = noisy_labels(d, rng)
        jobs.append((d.image, labels, n_labels))
    return {"jobs": jobs, "processes": s.threads}


def crf_job(job) -> np.ndarray:
    return crf_labels(*job, CRF)


def crf_project(state) -> list:
    """As the pseudo_labels and affinity_labels rules: stages.core.parallel.imap over ``--threads`` workers."""
    return list(imap(crf_job, state["jobs"], state["processes"]))


def crf_naive(state) -> list:
    return [naive.crf_inference_label(img, labels, n) for img, labels, n in state["jobs"]]


def differing_fraction(a: list, b: list) -> float:
    return float(np.mean([np.mean(x != y) for x, y in zip(a, b)]))


register(Case("dense CRF (10 iterations)", crf_setup, crf_project, crf_naive, differing_fraction, lambda s: 0.0,
              lambda s: s.n * CRF_IMAGES_PER_N, image_size, "fraction of pixels labelled differently",
              "one process", cpu_only=True))


# -- DeepLabv3+ inference -----------------------------------------------------------------------

def seg_setup(s: Settings) -> dict:
    seed_everything(s.seed)
    return {"model": create_deeplab(s.backbone, NUM_CLASSES + 1, 256).eval(), "data": samples(s.n, s.height, s.width, s.seed),
            "rt": case_runtime(s)}


def seg_project(state) -> list:
    """As predict_segmentation: the model placed by the runtime, scales batched with their flips."""
    rt = state["rt"]
    model = rt.place(copy.deepcopy(state["model"]))
    return [multiscale_logits(model, normalize(d.image).to(rt.device)[None], SEG_SCALES, True, rt.autocast)[0].float().cpu().numpy()
            for d in state["data"]]


def seg_naive(state) -> list:
    model = copy.deepcopy(state["model"]).to(state["rt"].device)
    return [t.numpy() for t in naive.segmentation_logits(model, [d.image for d in state["data"]], SEG_SCALES)]


register(Case("DeepLabv3+ multi-scale inference (3 scales x flip)", seg_setup, seg_project, seg_naive, max_rel,
              half_or(5e-2, 8e-2), n_images, image_size, "max |difference| of the logits / max |logit| (the same 0.5 downscale)",
              "per image, fp32, PIL bicubic resize of the photo per scale"))


# -- segmenting a folder of photos ---------------------------------------------------------------

# the predict_segmentation settings of config/voc2012.yaml, less one scale (the reference's test-time CRF)
SEGMENT_CFG = {"scales": list(SEG_SCALES), "flip": True, "crf": {**CRF, "bilateral": {"sxy": 80, "srgb": 13, "compat": 10}}}


def segment_setup(s: Settings) -> dict:
    """A folder's worth of photos of one size (VOC's sizes repeat: most batches fill up), a DeepLabv3+."""
    seed_everything(s.seed)
    return {"model": create_deeplab(s.backbone, NUM_CLASSES + 1, 256).eval(), "rt": case_runtime(s), "processes": s.threads,
            "data": samples(cam_images(s), s.height, s.width, s.seed)}


def _label(key, image, label):
    return label


def segment_folder(state, batch_size: int) -> list:
    """rule segment's inference (stages/core/segmenter.py): ``batch_size`` same-size photos per forward, the CRF in
    the pool while the next batch runs."""
    rt = state["rt"]
    model = rt.inference_model(copy.deepcopy(state["model"])) if rt.cuda else rt.place(copy.deepcopy(state["model"]))
    photos = [(k, d.image) for k, d in enumerate(state["data"])]
    return list(segment(model, photos, SEGMENT_CFG, rt, state["processes"], _label, batch_size=batch_size))


register(Case("segment a folder (3 scales x flip + CRF)", segment_setup,
              functools.partial(segment_folder, batch_size=SEGMENTER_BATCH), functools.partial(segment_folder, batch_size=1),
              differing_fraction, lambda s: 1e-3, cam_images, image_size,
              "fraction of pixels labelled differently (a batch's arithmetic is not one image's, to the last bit)",
              "one photo at a time (the same inference and CRF pool)"))


# -- the embedded default's whole training steps ------------------------------------------------

EMBEDDED_CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
EMBEDDED_STEPS = 2  # whole steps timed per version: the first one's one-off set-up is shared with a second


def embedded_config() -> dict:
    """config/config.yaml, the embedded default that ``make run`` trains, as the run reads it (the config pass)."""
    return run_config(["--configfile", EMBEDDED_CONFIG])


def embedded_files(folder: Path, cfg: dict, n: int, seed: int) -> tuple[list[Path], list[Path], list[list[int]]]:
    """``n`` generated images and masks as make_dataset writes them, with their class ids."""
    gen, classes = cfg["data"]["generate"], cfg["data"]["classes"]
    rng = np.random.default_rng(seed)
    images, masks, labels = [], [], []
    for i in range(n):
        img, mask = make_sample(rng, classes, gen["image_size"], gen)
        images.append(folder / f"{i}.jpg")
        masks.append(folder / f"{i}.png")
        cv2.imwrite(str(images[-1]), img[..., ::-1])
        save_label_png(masks[-1], mask)
        labels.append([int(c) for c in np.unique(mask) if c])
    return images, masks, labels


def embedded_setup(s: Settings, model: str) -> dict:
    """The model, its parameter groups and a dataset of its section of the embedded config, on generated files."""
    seed_everything(s.seed)
    config = embedded_config()
    section, num_classes = config[EMBEDDED_MODELS[model].section], len(config["data"]["classes"])
    folder = tempfile.TemporaryDirectory()  # removed with the state, when the worker is done
    n = EMBEDDED_STEPS * section["batch_size"]
    images, masks, labels = embedded_files(Path(folder.name), config, n, s.seed)
    recipe, with_masks, naive_terms = EMBEDDED_MODELS[model].parts(section, config, num_classes)
    if model == "affinity":  # affinity labels: confident regions, the rest ignored
        rng = np.random.default_rng(s.seed)
        for path in masks:
            mask = np.array(Image.open(path))
            save_label_png(path, np.where(rng.random(mask.shape) < 0.3, 255, mask).astype(np.uint8))
    data = TrainSamples(images, section, s.seed, masks=masks if with_masks else None, labels=labels, num_classes=num_classes)
    return {"model": recipe.build(), "recipe": recipe, "naive_terms": naive_terms, "data": data, "cfg": section,
            "rt": case_runtime(s, autotune=True), "folder": folder}


def whole_steps(state) -> list:
    """EMBEDDED_STEPS steps as stages.core.engine.fit runs them: batches from the loader (read, augment, collate),
    forward and backward under the runtime's autocast, the section's optimizer."""
    rt, cfg = state["rt"], state["cfg"]
    model = rt.place(copy.deepcopy(state["model"]))
    model.train()
    optimizer = make_sgd(state["recipe"].param_groups(model), cfg)
    torch.manual_seed(rt.seed)  # the same dropout masks for both versions
    out = []
    for batch in epoch_loader(state["data"], cfg["batch_size"], 0, rt.seed, rt.loader_kwargs()):
        batch = {k: v.to(rt.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with rt.autocast():
            terms = state["recipe"].make_step(model)(batch, 0, 100)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        out.append(np.array([float(v.detach()) for v in terms.values()]))
    if rt.cuda:
        torch.cuda.synchronize()
    return out


def naive_whole_steps(state) -> list:
    """The same batches through the reference's loss terms (bench/naive.py), fp32, contiguous, plain SGD."""
    rt, cfg = state["rt"], state["cfg"]
    model = copy.deepcopy(state["model"]).to(rt.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    torch.manual_seed(rt.seed)
    out = []
    for batch in epoch_loader(state["data"], cfg["batch_size"], 0, rt.seed, rt.loader_kwargs()):
        batch = {k: v.to(rt.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        out.append(np.array(naive.train_step(model, state["naive_terms"], batch, optimizer)))
    if rt.cuda:
        torch.cuda.synchronize()
    return out


def first_step_rel(a: list, b: list) -> float:
    """:func:`max_rel` of the first step's loss terms: later steps follow each version's own optimizer (the
    reference's parameter groups are the project's, tested in tests/test_engine.py)."""
    return max_rel(a[:1], b[:1])


@dataclass(frozen=True)
class EmbeddedModel:
    section: str
    # (section, config, num_classes) -> (the stage's recipe, with_masks, the reference's loss terms)
    parts: Callable


def classifier_parts(cfg, config, num_classes):
    variant = config["classifier"]["variant"]
    return (classifier_recipe(cfg, num_classes, variant), False,
            lambda m, b: naive.puzzle_terms(m, b["image"], b["label"], VARIANTS[variant].p_cls, VARIANTS[variant].re,
                                            0.0))  # iteration 0


def affinity_parts(cfg, config, num_classes):
    return (affinity_recipe(cfg, config["classifier"]["backbone"]), True,
            lambda m, b: naive.affinity_terms(m, b["image"], b["mask"], cfg["radius"]))


def deeplab_parts(cfg, config, num_classes):
    return (segmentation_recipe(cfg, num_classes), True, lambda m, b: naive.deeplab_terms(m, b["image"], b["mask"]))


# what train_classifier, train_affinity and train_segmentation build from their section
EMBEDDED_MODELS = {"classifier": EmbeddedModel("classifier", classifier_parts),
                   "affinity": EmbeddedModel("affinity", affinity_parts),
                   "DeepLabv3+": EmbeddedModel("segmentation", deeplab_parts)}


def embedded_images(s: Settings, model: str) -> int:
    return EMBEDDED_STEPS * embedded_config()[EMBEDDED_MODELS[model].section]["batch_size"]


def embedded_size(s: Settings, model: str) -> str:
    cfg = embedded_config()[EMBEDDED_MODELS[model].section]
    return f"embedded: {cfg['crop_size']}x{cfg['crop_size']} crops, batch {cfg['batch_size']}"


for _model in EMBEDDED_MODELS:
    register(Case(f"embedded {_model} training step", functools.partial(embedded_setup, model=_model),
                  whole_steps, naive_whole_steps, first_step_rel, half_or(1e-4, 3e-2),
                  functools.partial(embedded_images, model=_model), functools.partial(embedded_size, model=_model),
                  "relative difference of the first step's loss terms", "the reference's loss terms, fp32, contiguous"))
