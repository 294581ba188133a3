"""python -m bench.integrity: what keying results on the bytes of their inputs costs, as a share of the work it
guards; writes bench/integrity.md.

Two measurements, each a ratio within one run (timings here are noisy; ratios less so):

- segmenting new photos (rule segment, ``python -m stages.segment``): the sha256 of each photo, taken on every
  call, against segmenting it with the run's settings, on photos of an ordinary size;
- a per-image stage on a dataset: the hashes its staging check takes of a split's images and masks, against
  the stage itself (make_cams with the run's CAM settings), the cheapest per image of the stages that hash; a
  first run hashes a split about :data:`PASSES` times (the plan's fingerprints, the index's records, each
  per-image stage, the checkpoint key of each training).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.__main__ import device_name
from stages.core.runtime import make_runtime
from stages.data.fingerprint import sha256
from stages.utils.io import save_model, write_text

# the settings of config/config.yaml's predict_segmentation that segment uses: four scales, flip, 10 CRF rounds
SEGMENT = {"scales": [0.5, 1.0, 1.5, 2.0], "flip": True,
           "crf": {"iterations": 10, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3},
                   "bilateral": {"sxy": 80, "srgb": 13, "compat": 10}}}
# passes over a split's images in a first run: the plan's fingerprint, the index's records, make_cams,
# affinity_labels, random_walk, pseudo_labels, predict_segmentation, and the keys of the three trainings
PASSES = 10


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """``n`` photo-like JPEGs (smooth colour fields with noise) of ``size`` (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    paths = []
    for k in range(n):
        base = np.stack(np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h)), -1).sum(-1) / 2
        img = (base[..., None] * rng.random(3) + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"photo_{k}.jpg", quality=90)
        paths.append(folder / f"photo_{k}.jpg")
    return paths


def segment_share(tmp: Path, n: int, size: tuple[int, int], threads: int, precision: str) -> dict:
    from stages.data.photos import find_photos
    from stages.models.segmentation import create_deeplab
    from stages.segment import segment_photos

    cfg = {"encoder": "resnet18", "decoder_channels": 64, "aspp_rates": [6, 12, 18], "aspp_separable": False,
           "frozen_bn": False, "pretrained": False, "pretrained_path": None}
    model = create_deeplab("resnet18", 21, 64, aspp_rates=(6, 12, 18), aspp_separable=False, frozen_bn=False)
    save_model(tmp / "model.pt", model.state_dict(), {"encoder": "resnet18", "classes": [str(c) for c in range(20)],
                                                      "config": cfg, "image_max_side": max(size)})
    paths = photos(tmp / "photos", n, size)
    rt = make_runtime("cpu", threads=threads, precision=precision)
    segment_s = timed(lambda: segment_photos(find_photos([tmp / "photos"])[0], tmp / "model.pt", SEGMENT, rt,
                                             tmp / "out", threads))
    hash_s = timed(lambda: [sha256(p) for p in paths])
    return {"photos": n, "size": f"{size[0]}x{size[1]}", "segment_s": segment_s, "hash_s": hash_s,
            "share": hash_s / segment_s}


def first_run_share(tmp: Path, threads: int, precision: str) -> dict:
    """The embedded dataset of config/config.yaml, generated into ``tmp``: one hash of every image and mask of its
    training split against make_cams over that split with the run's settings."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "rules"))
    from pipeline.config import run_config

    from stages.data.layout import DatasetLayout
    from stages.image_labels import build_index
    from stages.make_cams import make_cams
    from stages.make_dataset import make_dataset
    from stages.models.factory import build_classifier

    config = run_config()
    data = {**config["data"], "root": str(tmp / "VOC2012")}
    data.pop("generate")
    make_dataset(tmp / "VOC2012", data["classes"], config["data"]["generate"], config["seed"])
    index, ids = build_index(DatasetLayout.from_config(data, None, "bench"))
    train = ids[data["train_split"]]
    files = [index.image_path(i) for i in train] + [index.mask_path(i) for i in train]
    cfg = config["classifier"]
    save_model(tmp / "classifier.pt", build_classifier(cfg, index.num_classes).state_dict(), {"config": cfg})
    rt = make_runtime("cpu", threads=threads, precision=precision)
    cams_s = timed(lambda: make_cams(index, train, tmp / "classifier.pt", config["cams"], rt, tmp / "cams"))
    hash_s = timed(lambda: [sha256(p) for p in files])
    return {"images": len(train), "size": f"{config['data']['generate']['image_size']}px", "cams_s": cams_s,
            "hash_s": hash_s, "share": hash_s / cams_s, "scales": len(config["cams"]["scales"]),
            "flip": config["cams"]["flip"]}


def report(seg: dict, first: dict, machine: str, precision: str) -> str:
    return "\n".join([
        "# What keying results on their inputs' bytes costs",
        "",
        "`python -m bench.integrity` (this file). Segment and the per-image stages key what they keep on the sha256",
        "of the photos and images they read, not on their size and modification time, so that a file replaced by",
        "another of the same size and time is computed again. Each row is a ratio of two timings taken in one run.",
        "",
        f"Machine: {machine}; precision {precision}.",
        "",
        "| what | work | its time | hashing | hashing's share |",
        "|---|---|---|---|---|",
        f"| segment, each call | {seg['photos']} photos of {seg['size']}, 4 scales, flip, 10 CRF rounds | "
        f"{seg['segment_s']:.2f} s | {seg['hash_s'] * 1000:.1f} ms | {seg['share']:.3%} |",
        f"| a per-image stage (embedded data) | make_cams ({first['scales']} scales"
        f"{' x flip' if first['flip'] else ''}) over the {first['images']} training images of {first['size']}, "
        f"their images and masks hashed | {first['cams_s']:.2f} s | {first['hash_s'] * 1000:.1f} ms | "
        f"{first['share']:.3%} |",
        "",
        f"A first run hashes the training split about {PASSES} times in all ({PASSES * first['hash_s'] * 1000:.0f} ms "
        "here), each time beside a stage that costs at least the make_cams of the second row: trainings of many",
        "epochs, CRFs, the random walk.",
        "",
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=8)
    p.add_argument("--size", default="1024x768", help="photo width x height")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--out", type=Path, default=Path("bench/integrity.md"))
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        seg = segment_share(Path(tmp), args.photos, size, args.threads, args.precision)
    with tempfile.TemporaryDirectory() as tmp:
        first = first_run_share(Path(tmp), args.threads, args.precision)
    text = report(seg, first, device_name("cpu", args.threads), args.precision)
    write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
