"""Rule make_cams: multi-scale + flip CAMs of every training image, one npz per image."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from stages import cli
from stages.data.index import load_index
from stages.data.transforms import normalize
from stages.data.voc import read_image
from stages.io import load_model, save_npz
from stages.ops.cam import multiscale_cam
from stages.progress import track
from stages.train_classifier import build_classifier

log = logging.getLogger("stages")


def load_classifier(path, num_classes: int, rt):
    state, meta = load_model(path)
    model = build_classifier({**meta["config"], "pretrained": False, "pretrained_path": None}, num_classes)
    model.load_state_dict(state)
    model.eval().to(rt.device)
    if rt.cuda:
        model.to(memory_format=torch.channels_last)
    return model


def make_cams(index, ids, model_path: Path, cfg: dict, rt, out: Path) -> None:
    model = load_classifier(model_path, index.num_classes, rt)
    out.mkdir(parents=True, exist_ok=True)
    for image_id in track(ids, "make_cams"):
        img = read_image(index.layout.image_path(image_id))
        keys = index.labels[image_id]
        x = normalize(img).to(rt.device)
        cam, cam_s4 = multiscale_cam(model, x, cfg["scales"], cfg["flip"], keys, rt.autocast)
        save_npz(out / f"{image_id}.npz", keys=np.asarray(keys, np.int64),
                 cam=cam.numpy().astype(np.float16), cam_s4=cam_s4.numpy().astype(np.float16))


def add_arguments(p):
    p.add_argument("--labels", required=True, type=Path)
    p.add_argument("--split-file", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path, help="classifier model.pt")
    p.add_argument("--out", required=True, type=Path, help="folder for <id>.npz")


def run(args):
    rt = cli.runtime(args)
    index = load_index(args.labels)
    make_cams(index, index.ids(args.split_file), args.model, args.cfg, rt, args.out)


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
