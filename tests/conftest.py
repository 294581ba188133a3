"""Shared fixtures: a tiny generated dataset in the VOC layout, its index, a CPU runtime, and the helpers
several test modules use (Snakemake runs, VOC/SBD and user-dataset fixtures, IRN's path cells, a stand-in
for a GPU), so that no test module imports another. The whole-DAG tests are marked ``slow``."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
import torch.fx.experimental._config as fx_config
import yaml
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "rules"))  # the workflow's helpers, as Snakemake finds them

from pipeline.config import fill_defaults  # noqa: E402

from stages.core.job import Job  # noqa: E402
from stages.core.runtime import make_runtime  # noqa: E402
from stages.data.layout import DatasetLayout  # noqa: E402
from stages.data.voc import VOC_CLASSES, read_mask  # noqa: E402
from stages.image_labels import build_index  # noqa: E402
from stages.make_dataset import make_dataset  # noqa: E402
from stages.utils.io import save_label_png  # noqa: E402

SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
CLASSES = ["disc", "square", "triangle", "cross"]
TINY = {
    "image_size": 64,
    "splits": {"train": 8, "val": 4},
    "max_objects": 2,
    "max_clutter": 2,
    "p_cooccur": 0.4,
    "p_class_colour": 0.8,
    "object_scale": [0.2, 0.32],
    "min_visible": 0.03,
    "body_saturation": [140, 255],
    "part_scale": None,
    "part_shape": "disc",
}

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory) -> Path:
    """A VOC2012 folder with 8 train and 4 val images of 64x64."""
    root = tmp_path_factory.mktemp("data") / "VOCdevkit" / "VOC2012"
    make_dataset(root, CLASSES, TINY, seed=0)
    return root


def with_defaults(section: str, cfg: dict) -> dict:
    """A config section with the schema's defaults filled in, as the workflow hands it to a stage."""
    return fill_defaults({section: dict(cfg)}, SCHEMA)[section]


def layout_of(root, classes=CLASSES, splits=("train", "val"), data_root=None, run="run", **data) -> DatasetLayout:
    """The layout of a data section: ``root``, ``classes``, ``splits`` (the first trains) and any other data keys."""
    section = {"root": str(root), "classes": list(classes), "splits": list(splits), "train_split": splits[0],
               "cam_split": splits[0], "eval_split": splits[-1], **data}
    return DatasetLayout.from_config(with_defaults("data", section), data_root, run)


def stage_job(rule: str, input=(), output=(), params=(), wildcards=(), threads: int = 1, resources=()) -> Job:
    """The job a rule would hand its stage (stages/core/job.py)."""
    return Job.make(rule, dict(input), dict(output), dict(params), dict(wildcards), threads, dict(resources))


def index_file(index, folder: Path) -> Path:
    """The image index written as image_labels writes it: what a job's input ``labels`` names."""
    from stages.utils.io import write_json

    path = Path(folder) / "image_labels.json"
    write_json(path, index.to_json())
    return path


CPU = {"device": "cpu", "precision": "auto", "deterministic": False, "seed": 0}


def training_job(rule: str, labels: Path, split: Path, out: Path, cfg: dict, checkpoint: Path, runtime=(), wildcards=(),
                 threads: int = 1, **inputs) -> Job:
    """The job of a training rule: its model, sidecar, history and TensorBoard folder under ``out``."""
    return stage_job(rule, input={"labels": labels, "split": split, **inputs},
                     output={"model": out / "model.pt", "meta": out / "model.json", "history": out / "history.csv",
                             "tensorboard": out / "tensorboard"},
                     params={"cfg": cfg, "runtime": {**CPU, **dict(runtime)}, "checkpoint": checkpoint},
                     wildcards=wildcards, threads=threads)


def run_stage(rule: str, **job) -> subprocess.CompletedProcess:
    """``python -m stages.<rule> JOB`` as the rule's shell line runs it (through launch), in a subprocess."""
    return subprocess.run([sys.executable, "-m", "stages.core.launch", stage_job(rule, **job).to_json()],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def tiny_index(tiny_voc):
    index, _ = build_index(layout_of(tiny_voc))
    return index


@pytest.fixture
def cpu():
    return make_runtime("cpu", seed=0)


def train_cfg(section: str = "segmentation", **overrides) -> dict:
    """A tiny training schedule shared by the trainer tests, with the schema's defaults of ``section``."""
    cfg = {"epochs": 2, "batch_size": 4, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
           "resize_long": [56, 72], "crop_size": 64}
    cfg.update(overrides)
    return with_defaults(section, cfg)


def classifier_cfg(**kw) -> dict:
    """The classifier section of the trainer tests: a random resnet18, the puzzle ramp over half the run."""
    return train_cfg("classifier", **{"backbone": "resnet18", "pretrained": False, "pretrained_path": None,
                                       "alpha_max": 4.0, "alpha_ramp": 0.5, **kw})


class Executes:
    """Unpickling this object would run a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def bare_env(**extra) -> dict:
    """The environment of a user who calls .venv/bin/snakemake without activating the venv: no venv on PATH, no
    PYTHONPATH (the rules must find their interpreter and the stages package themselves)."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PATH": path, **extra}


def _snakemake(workdir, *args, check=True, env=None):
    env = bare_env(**(env or {}))
    proc = subprocess.run([*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *args],
                          capture_output=True, text=True, env=env, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _planned_jobs(proc) -> dict[str, int]:
    """Job counts from a dry run's 'Job stats' table."""
    counts, in_table = {}, False
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
        elif in_table and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


def _write_sbd_mat(path, seg: np.ndarray) -> None:
    """One SBD cls/ file as the benchmark ships it: GTcls with Segmentation, Boundaries, CategoriesPresent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.array([c for c in np.unique(seg) if 0 < c < 255], np.uint8)
    boundaries = np.empty((20, 1), object)
    for c in range(20):
        boundaries[c, 0] = scipy.sparse.csc_matrix(seg == c + 1, dtype=float)  # SBD stores them sparse
    scipy.io.savemat(path, {"GTcls": {"Segmentation": seg.astype(np.uint8), "Boundaries": boundaries,
                                      "CategoriesPresent": present}})


# VOC train/val have SegmentationClass masks; SBD adds masks for more ids (and overlaps VOC train);
# train_aug = VOC train + SBD-only ids; test has images only.
VOC_FIXTURE_SPLITS = {"train": 6, "val": 4, "test": 3}


VOC_FIXTURE_SBD_ONLY = 6


VOC_FIXTURE_SIZES = [(64, 80), (72, 64), (64, 64)]  # (height, width): VOC images are not square


def _voc_sample(rng, size) -> tuple[np.ndarray, np.ndarray]:
    """A textured background with one or two class rectangles; the mask has VOC's 255 outline."""
    h, w = size
    img = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for c in rng.choice(np.arange(1, len(VOC_CLASSES) + 1), size=rng.integers(1, 3), replace=False):
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        bh, bw = rng.integers(h // 4, h // 2), rng.integers(w // 4, w // 2)
        img[y:y + bh, x:x + bw] = np.array([c * 12, 255 - c * 12, (c * 37) % 256], np.uint8)
        mask[y:y + bh, x:x + bw] = c
    edges = cv2.dilate(mask, np.ones((3, 3), np.uint8)) != cv2.erode(mask, np.ones((3, 3), np.uint8))
    return img, np.where(edges, 255, mask).astype(np.uint8)


def _voc_xml(path: Path, mask: np.ndarray, extra: list[tuple[int, tuple[int, int, int, int]]] = ()) -> None:
    """A VOC annotation: one object per class of the mask (its box), and ``extra`` (class, (xmin, ymin, xmax, ymax))."""
    h, w = mask.shape
    objects = []
    for c in [int(c) for c in np.unique(mask) if 0 < c < 255]:
        ys, xs = np.nonzero(mask == c)
        objects.append((c, (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)))
    xml = "".join(f"<object><name>{VOC_CLASSES[c - 1]}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
                  f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                  for c, b in [*objects, *extra])
    path.write_text(f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{xml}</annotation>")


# The annotations' known departures from the masks: a box of no width (dropped, as the reference drops it) on the first
# SBD image, and an object the mask does not hold on the first VOC train image (its XML classes differ from the mask's).
VOC_FIXTURE_EMPTY_BOX = (20, (5, 5, 5, 30))  # tvmonitor, xmin == xmax
VOC_FIXTURE_EXTRA_OBJECT = (15, (2, 2, 12, 12))  # person


def _make_voc_fixture(data_root: Path, seed: int = 0) -> dict[str, list[str]]:
    """``data_root``/VOCdevkit/VOC2012 (with Annotations), benchmark_RELEASE/dataset/cls/*.mat and train_aug.txt;
    returns the ids."""
    rng = np.random.default_rng(seed)
    voc = data_root / "VOCdevkit" / "VOC2012"
    sbd = data_root / "benchmark_RELEASE" / "dataset" / "cls"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    ids, n = {}, 0
    for split, count in {**VOC_FIXTURE_SPLITS, "sbd": VOC_FIXTURE_SBD_ONLY}.items():
        ids[split] = [f"20{10 + len(ids)}_{n + i:06d}" for i in range(count)]
        n += count
        for k, image_id in enumerate(ids[split]):
            img, mask = _voc_sample(rng, VOC_FIXTURE_SIZES[k % len(VOC_FIXTURE_SIZES)])
            cv2.imwrite(str(voc / "JPEGImages" / f"{image_id}.jpg"), img[..., ::-1])
            if split in ("train", "val"):
                save_label_png(voc / "SegmentationClass" / f"{image_id}.png", mask)
            if split in ("sbd", "train"):  # SBD has no 255 outline
                _write_sbd_mat(sbd / f"{image_id}.mat", np.where(mask == 255, 0, mask))
            extra = {("sbd", 0): [VOC_FIXTURE_EMPTY_BOX], ("train", 0): [VOC_FIXTURE_EXTRA_OBJECT]}.get((split, k), [])
            _voc_xml(voc / "Annotations" / f"{image_id}.xml", mask, extra)
        if split != "sbd":
            (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids[split]) + "\n")
    ids["train_aug"] = ids["train"] + ids["sbd"]
    # SBD's own lists: its images overlap VOC train and one VOC val image, which train_aug leaves out
    (sbd.parent / "train.txt").write_text("\n".join(ids["sbd"][:3] + ids["train"][:2]) + "\n")
    (sbd.parent / "val.txt").write_text("\n".join(ids["sbd"][3:] + ids["val"][:1]) + "\n")
    # the path-pair form some repositories ship the list in
    (data_root / "train_aug.txt").write_text("".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in ids["train_aug"]))
    return ids


def _exif_jpeg(path, pixels: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=100, exif=exif)


def _own_dataset(tiny_voc, tmp_path, formats=("jpg", "png", "jpeg")) -> tuple[Path, dict]:
    """The tiny dataset as a user has it: images/ in several formats, an id with a space and one in a
    subfolder, masks/, Annotations/, train.txt and val.txt; returns the root and the ids' mask classes."""
    root = tmp_path / "own"
    src = {s: (tiny_voc / "ImageSets/Segmentation" / f"{s}.txt").read_text().split() for s in ("train", "val")}
    rename = {src["train"][0]: "syn 000003", src["train"][1]: "street/0001"}
    classes = {}
    for split, ids in src.items():
        new_ids = [rename.get(i, i) for i in ids]
        for k, (old, new) in enumerate(zip(ids, new_ids)):
            img = Image.open(tiny_voc / "JPEGImages" / f"{old}.jpg")
            (root / "images" / new).parent.mkdir(parents=True, exist_ok=True)
            img.save(root / "images" / f"{new}.{formats[k % len(formats)]}")
            mask = read_mask(tiny_voc / "SegmentationClass" / f"{old}.png")
            save_label_png(root / "masks" / f"{new}.png", mask)
            classes[new] = [int(c) for c in np.unique(mask) if 0 < c < 255]
            objects = "".join(f"<object><name>{CLASSES[c - 1]}</name><difficult>0</difficult></object>" for c in classes[new])
            (root / "Annotations" / new).parent.mkdir(parents=True, exist_ok=True)
            (root / "Annotations" / f"{new}.xml").write_text(f"<annotation><filename>{new}</filename>{objects}</annotation>")
        (root / f"{split}.txt").write_text("\r\n".join(new_ids) + "\r\n")
    rows = [f"{i},{' '.join(CLASSES[c - 1] for c in cs)}" for i, cs in classes.items()]
    (root / "tags.csv").write_text("id,labels\n" + "\n".join(rows) + "\n")
    return root, classes


def _segment_cells(d: tuple[int, int]) -> set[tuple[int, int]]:
    """IRN's path between 0 and d: the grid cells whose distance to the segment 0-d is below 1, computed exactly."""
    dy, dx = d
    length_sq = dy * dy + dx * dx
    cells = set()
    for y in range(min(0, dy) - 2, max(0, dy) + 3):
        for x in range(min(0, dx) - 2, max(0, dx) + 3):
            t = min(max(Fraction(y * dy + x * dx, length_sq), Fraction(0)), Fraction(1))  # nearest point on the segment
            if (y - t * dy) ** 2 + (x - t * dx) ** 2 < 1:
                cells.add((y, x))
    return cells


# Fixtures whose tests run the whole DAG: those tests are marked slow (pytest -m "not slow" leaves them out).
WHOLE_DAG_RUNS = {"micro_run", "custom_run", "voc_run"}


# Files whose tests mostly wait (on a SLURM cluster's queue) run first, then the files that run the whole DAG, most
# tests first, so that `make test`'s workers (one file each, in this order: --no-loadscope-reorder) end on short files.
WAITING_FILES = {"test_slurm.py"}


def file_order(items) -> dict:
    """Sort key of each test file: waiting files, then whole-DAG files by test count (descending), then the rest."""
    counts = Counter(item.path for item in items)
    runs_dag = {item.path for item in items if WHOLE_DAG_RUNS & set(getattr(item, "fixturenames", ()))}
    return {path: (0, 0) if path.name in WAITING_FILES else (1, -n) if path in runs_dag else (2, 0)
            for path, n in counts.items()}


def pytest_collection_modifyitems(items):
    order = file_order(items)
    items.sort(key=lambda item: order[item.path])  # stable: a file's tests keep their order
    for item in items:
        if WHOLE_DAG_RUNS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, request):
    """A module's working directory with the repository's config folder, as a user's checkout has, and the
    module's ``TINY`` config overlay, where it has one, as tiny.yaml."""
    wd = tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_"))
    (wd / "config").symlink_to(ROOT / "config")
    if (tiny := getattr(request.module, "TINY", None)) is not None:
        (wd / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    return wd


@pytest.fixture(scope="session")
def snakemake():
    """``snakemake(workdir, *args, check=True, env=None)``: Snakemake on this repository's Snakefile, run in
    ``workdir`` with the venv off PATH and ``env`` added."""
    return _snakemake


@pytest.fixture(scope="session")
def planned_jobs():
    """``planned_jobs(proc)``: job counts of a dry run."""
    return _planned_jobs


@pytest.fixture(scope="session")
def write_sbd_mat():
    """``write_sbd_mat(path, seg)``: one SBD cls/*.mat file."""
    return _write_sbd_mat


@pytest.fixture(scope="session")
def make_voc_fixture():
    """``make_voc_fixture(data_root, seed=0)``: VOC 2012 + SBD + train_aug.txt under ``data_root``; returns the ids."""
    return _make_voc_fixture


@pytest.fixture(scope="session")
def exif_jpeg():
    """``exif_jpeg(path, pixels, orientation)``: a JPEG with an EXIF orientation tag."""
    return _exif_jpeg


@pytest.fixture(scope="session")
def own_dataset():
    """``own_dataset(tiny_voc, tmp_path, formats)``: the tiny dataset laid out as a user's own."""
    return _own_dataset


@pytest.fixture(scope="session")
def segment_cells():
    """``segment_cells(d)``: IRN's path cells between 0 and ``d``."""
    return _segment_cells


_aten = torch.ops.aten
# ops that move a tensor between devices, which CUDA allows
_MOVES = {_aten._to_copy.default, _aten.copy_.default, _aten.lift_fresh.default, _aten.lift_fresh_copy.default}
# ops whose index tensors may stay on the CPU while the tensor indexed is on the GPU
_INDEXING = {_aten.index.Tensor, _aten.index_put_.default, _aten.index_put.default, _aten._index_put_impl_.default}


class CudaDeviceRules(TorchDispatchMode):
    """Every op on meta tensors checked as CUDA checks it: all tensors on one device but for CPU scalars (0-dim)
    and index tensors; the meta kernels alone let many mixes through (matmul, index_put). A meta tensor copied to
    the CPU gives zeros of its shape (meta tensors hold no data), and the sparse product, which meta lacks, its
    shape."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if first is not None and first.device.type == "meta":
            if func is _aten._to_copy.default and kwargs.get("device", first.device).type == "cpu":
                return torch.zeros(first.shape, dtype=kwargs.get("dtype") or first.dtype)
            if func is _aten._local_scalar_dense.default:
                return torch.zeros((), dtype=first.dtype).item()
            if func is _aten.mm.default and first.layout != torch.strided:
                return torch.empty(first.shape[0], args[1].shape[1], dtype=args[1].dtype, device="meta")
        if func not in _MOVES:
            checked = (args[0], *args[2:]) if func in _INDEXING else args
            devices = {t.device for t in tree_leaves((checked, kwargs))
                       if isinstance(t, torch.Tensor) and not (t.device.type == "cpu" and t.dim() == 0)}
            if len(devices) > 1:
                raise RuntimeError(f"{func}: tensors on {' and '.join(sorted(map(str, devices)))}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def _on_meta():
    # boolean masks on meta keep every element: their count is data, which meta tensors lack
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True), CudaDeviceRules():
        yield torch.device("meta")


@pytest.fixture(scope="session")
def on_meta():
    """``with on_meta() as device:`` the meta device, standing for a GPU on a machine without one: a CPU tensor
    mixed into its computation raises as on CUDA."""
    return _on_meta


def seed_table(cam: float, disc: float | None, seg: float) -> list[dict]:
    """One seed's miou.json: the CAM row (train) and the segmentation row (val)."""
    return [
        {"stage": "cam", "split": "train", "variant": "puzzle", "images": 10, "protocol": "full", "threshold": 0.3,
         "miou": cam, "per_class": {"background": 80.0, "disc": disc}},
        {"stage": "segmentation", "split": "val", "variant": "puzzle", "images": 5, "protocol": "full", "miou": seg,
         "per_class": {"background": 90.0, "disc": disc}},
    ]


# three seeds' tables (summary, figures); seed 2 has no disc score: its mean and spread are over seeds 0 and 1
SEED_TABLES = {0: seed_table(70.0, 50.0, 60.0), 1: seed_table(72.0, 56.0, 61.0), 2: seed_table(77.0, None, 65.0)}
