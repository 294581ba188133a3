"""Rule predict_segmentation: multi-scale + flip DeepLabv3+ inference (+ dense CRF) -> palette PNGs."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from stages import cli
from stages.data.transforms import normalize
from stages.data.voc import read_image, resize_labels
from stages.io import save_label_png
from stages.models.factory import load_deeplab
from stages.models.segmentation import multiscale_logits
from stages.ops.crf import crf_probs
from stages.parallel import imap
from stages.progress import track
from stages.staging import StagedOutputs, inputs_key


def _finish(job, cfg):
    """Dense CRF on the class probabilities (if enabled), argmax, PNG at the image's own size."""
    image_path, max_side, size, probs, out_path = job
    if cfg["crf"]["iterations"] > 0:
        probs = crf_probs(read_image(image_path, max_side), probs.astype(np.float32), cfg["crf"])
    save_label_png(out_path, resize_labels(np.argmax(probs, axis=0).astype(np.uint8), size))


def predict_segmentation(index, ids, model_path: Path, cfg: dict, rt, out: Path, processes: int) -> None:
    staged = StagedOutputs(out, ".png", cfg, ids, inputs_key(model_path))
    todo = staged.todo(ids)
    model = load_deeplab(model_path, index.num_classes, rt)

    def jobs():
        for image_id in todo:
            x = normalize(index.read_image(image_id)).to(rt.device)
            probs = torch.softmax(multiscale_logits(model, x, cfg["scales"], cfg["flip"], rt.autocast), 0)
            yield (index.image_path(image_id), index.max_side, index.size(image_id), probs.cpu().numpy().astype(np.float16),
                   staged.path(image_id))

    for _ in track(imap(functools.partial(_finish, cfg=cfg), jobs(), processes), "predict_segmentation", total=len(todo)):
        pass
    staged.commit()


def add_arguments(p):
    cli.add_split_arguments(p)
    p.add_argument("--model", required=True, type=Path, help="segmentation model.pt")
    p.add_argument("--out", required=True, type=Path, help="folder for <id>.png")


def run(args):
    rt = cli.runtime(args)
    index, ids = cli.split_index(args)
    predict_segmentation(index, ids, args.model, args.cfg, rt, args.out, args.threads or 1)


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
