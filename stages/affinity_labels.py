"""Rule affinity_labels: confident foreground/background from the CAMs, refined by dense CRF.

label = the class where the CRF-refined map at ``fg_threshold`` says a class, 0 where
it and the map at ``bg_threshold`` both say background, 255 (unknown) elsewhere.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from stages import cli
from stages.data.index import load_index
from stages.data.voc import IGNORE, read_image
from stages.io import load_npz, save_label_png
from stages.ops.cam import threshold_argmax, with_background
from stages.ops.crf import crf_labels
from stages.parallel import imap
from stages.progress import track
from stages.staging import StagedOutputs, inputs_key


def affinity_label(img: np.ndarray, cam: np.ndarray, keys, cfg: dict) -> np.ndarray:
    ids = with_background(keys)
    n = len(ids)
    fg = ids[crf_labels(img, threshold_argmax(cam, cfg["fg_threshold"]), n, cfg["crf"])]
    bg = ids[crf_labels(img, threshold_argmax(cam, cfg["bg_threshold"]), n, cfg["crf"])]
    label = fg.copy()
    label[fg == 0] = IGNORE
    label[(fg == 0) & (bg == 0)] = 0
    return label


def _one(job, cfg):
    image_path, cam_path, out_path = job
    d = load_npz(cam_path)
    save_label_png(out_path, affinity_label(read_image(image_path), d["cam"].astype(np.float32), d["keys"], cfg))


def affinity_labels(index, ids, cams: Path, cfg: dict, out: Path, processes: int) -> None:
    staged = StagedOutputs(out, ".png", cfg, ids, inputs_key(cams))
    jobs = [(index.layout.image_path(i), cams / f"{i}.npz", staged.path(i)) for i in staged.todo(ids)]
    for _ in track(imap(functools.partial(_one, cfg=cfg), jobs, processes), "affinity_labels", total=len(jobs)):
        pass
    staged.commit()


def add_arguments(p):
    p.add_argument("--labels", required=True, type=Path)
    p.add_argument("--split-file", required=True, type=Path)
    p.add_argument("--cams", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)


def run(args):
    index = load_index(args.labels)
    affinity_labels(index, index.ids(args.split_file), args.cams, args.cfg, args.out, args.threads or 1)


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
