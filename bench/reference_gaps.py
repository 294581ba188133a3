"""python -m bench.reference_gaps: the measured effect of each difference from the reference that the pipeline
keeps, on a finished run (by default the embedded one that `make run` leaves in results/embedded).

Each row recomputes one stage's output as the reference would have it and scores both against the same masks:

- float16 storage: the CAMs, then the random walk and the pseudo labels, recomputed and kept in float32
- DeepLabv3+ padding: the predictions with each scale padded to a multiple of 32 instead of 16
- scoring protocol: the stored outputs scored under eval.protocol: reference as well as full
- checkpoint choice: the last epoch's against the best epoch's mask mIoU, from the trainers' TensorBoard logs

Writes bench/reference_gaps.md (or --out). CPU only: the numbers are exact there, whatever the thread count.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from pipeline.config import run_config

ROOT = Path(__file__).resolve().parents[1]

from stages.core.metrics import PROTOCOLS, score_label_maps  # noqa: E402
from stages.core.runtime import make_runtime  # noqa: E402
from stages.core.segmenter import segment  # noqa: E402
from stages.data.index import load_index  # noqa: E402
from stages.eval_cams import eval_cams  # noqa: E402
from stages.make_cams import batched_cams  # noqa: E402
from stages.models import segmentation  # noqa: E402
from stages.models.factory import load_affinity_net, load_classifier, load_deeplab  # noqa: E402
from stages.pseudo_labels import pseudo_label  # noqa: E402
from stages.random_walk import propagate_cams  # noqa: E402
from stages.utils.io import load_npz, save_label_png, save_npz, write_text  # noqa: E402
from stages.utils.progress import track  # noqa: E402


class Run:
    """The paths and settings of one seed of a finished run."""

    def __init__(self, configfiles: list[str], seed: int, threads: int):
        self.config = run_config(["--configfile", *configfiles])  # the config as the run saw it
        self.root = ROOT / "results" / self.config["run"]
        self.seed_dir = self.root / f"seed_{seed}"
        self.index = load_index(self.root / "labels/image_labels.json")
        data = self.config["data"]
        self.variant = self.config["classifier"]["variant"]
        self.cam_ids = self.ids(data["cam_split"])
        self.eval_split = data["eval_split"]
        self.rt = make_runtime("cpu", seed, 0, threads, self.config["precision"], False)

    def ids(self, split: str) -> list[str]:
        return self.index.ids(self.root / f"labels/splits/{split}.txt")


def float16_storage(run: Run, tmp: Path) -> list[dict]:
    """CAMs, random walk and pseudo labels computed as the stages compute them, kept in float32 throughout."""
    cfg = run.config
    model = load_classifier(run.seed_dir / f"classifier/{run.variant}/model.pt", run.index.num_classes, run.rt)
    images = ((i, run.index.read_image(i)) for i in run.cam_ids)
    stored_cams = run.seed_dir / f"cams/{run.variant}"
    cams32, cam_diff, recompute_diff = tmp / "cams32", 0.0, 0.0
    for image_id, keys, (cam, cam_s4) in track(batched_cams(model, images, run.index.labels, cfg["cams"], run.rt),
                                               "CAMs in float32", total=len(run.cam_ids)):
        stored = load_npz(stored_cams / f"{image_id}.npz")["cam"]
        cam_diff = max(cam_diff, float(np.abs(cam.numpy() - stored.astype(np.float32)).max(initial=0)))
        recompute_diff = max(recompute_diff, float(np.abs(cam.numpy().astype(np.float16) - stored).max(initial=0)))
        save_npz(cams32 / f"{image_id}.npz", keys=np.asarray(keys, np.int64), cam=cam.numpy(), cam_s4=cam_s4.numpy())
    if recompute_diff:
        raise SystemExit(f"the CAMs recomputed here differ from the run's ({recompute_diff}): not the same code or model")
    best = {name: eval_cams(run.index, run.cam_ids, folder, cfg["eval_cams"])["best"]["miou"]
            for name, folder in (("float32", cams32), ("float16", stored_cams))}
    rows = [{"what": f"CAMs ({len(run.cam_ids)} {cfg['data']['cam_split']} images)", "max_diff": cam_diff, **best}]

    affinity = load_affinity_net(run.seed_dir / "affinity/model.pt", run.rt)
    labels32, rw_diff = tmp / "labels32", 0.0
    for image_id in track(run.cam_ids, "random walk and pseudo labels in float32"):
        img, d = run.index.read_image(image_id), load_npz(cams32 / f"{image_id}.npz")
        rw = propagate_cams(affinity, img, d["cam_s4"], cfg["random_walk"], run.rt)
        stored = load_npz(run.seed_dir / f"rw/{image_id}.npz")["rw"].astype(np.float32)
        rw_diff = max(rw_diff, float(np.abs(rw - stored).max(initial=0)))
        save_label_png(labels32 / f"{image_id}.png", pseudo_label(img, rw, d["keys"], cfg["pseudo_labels"]))
    pseudo = {name: score_label_maps(run.index, run.cam_ids, folder)["miou"]
              for name, folder in (("float32", labels32), ("float16", run.seed_dir / "pseudo_labels"))}
    rows.append({"what": "random walk -> pseudo labels", "max_diff": rw_diff, **pseudo})
    return rows


def deeplab_padding(run: Run, tmp: Path) -> dict:
    """The DeepLabv3+ predictions of the eval split with each scale padded to a multiple of 32, against 16."""
    ids = run.ids(run.eval_split)
    model = load_deeplab(run.seed_dir / "segmentation/pseudo_labels/model.pt", run.index.num_classes, run.rt)
    scores, kept = {}, segmentation.PAD_TO
    try:
        for pad in (16, 32):
            segmentation.PAD_TO = pad
            out = tmp / f"pad{pad}"
            images = ((out / f"{i}.png", run.index.read_image(i)) for i in ids)
            for _ in track(segment(model, images, run.config["predict_segmentation"], run.rt, 1,
                                   lambda path, image, label: save_label_png(path, label)), f"DeepLabv3+, padding {pad}",
                           total=len(ids)):
                pass
            scores[pad] = score_label_maps(run.index, ids, out)["miou"]
    finally:
        segmentation.PAD_TO = kept
    return {"what": f"DeepLabv3+ on {run.eval_split} ({len(ids)} images)", "pad 16": scores[16], "pad 32": scores[32]}


def protocols(run: Run) -> list[dict]:
    """The stored outputs scored under both protocols."""
    cfg, rows = run.config, []
    for name, protocol in PROTOCOLS.items():
        cams = eval_cams(run.index, run.cam_ids, run.seed_dir / f"cams/{run.variant}", cfg["eval_cams"], protocol)
        pseudo = score_label_maps(run.index, run.cam_ids, run.seed_dir / "pseudo_labels", protocol)
        ids = run.ids(run.eval_split)
        seg = score_label_maps(run.index, ids, run.seed_dir / f"predictions/pseudo_labels/{run.eval_split}", protocol)
        rows.append({"protocol": name, "images": f"{cams['images']} / {seg['images']}", "cam": cams["best"]["miou"],
                     "pseudo_labels": pseudo["miou"], "segmentation": seg["miou"]})
    return rows


def checkpoints(run: Run) -> list[dict]:
    """Last against best epoch of each trainer's per-epoch mask mIoU (TensorBoard's eval/ scalars)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = []
    for trainer, tag in ((f"train_classifier/{run.variant}", "eval/cam_miou"), ("train_segmentation/pseudo_labels", "eval/miou")):
        events = EventAccumulator(str(run.seed_dir / "tensorboard" / trainer))
        events.Reload()
        if tag not in events.Tags()["scalars"]:
            continue
        values = [e.value for e in events.Scalars(tag)]
        best = int(np.argmax(values))
        rows.append({"trainer": trainer, "epochs": len(values), "last": values[-1], "best": values[best], "best epoch": best + 1})
    return rows


def markdown_table(rows: list[dict]) -> list[str]:
    head = list(rows[0])
    cell = lambda v: f"{v:.2f}" if isinstance(v, float) and abs(v) >= 0.01 else (f"{v:.1e}" if isinstance(v, float) else str(v))  # noqa: E731
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(cell(r[k]) for k in head) + " |" for r in rows), ""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", nargs="+", default=["config/config.yaml"], help="the run's config files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=ROOT / "bench/reference_gaps.md")
    args = p.parse_args()
    run = Run(args.configfile, args.seed, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        storage = float16_storage(run, Path(tmp))
        padding = deeplab_padding(run, Path(tmp))
    lines = [f"# Kept differences from the reference, measured on results/{run.config['run']} (seed {args.seed}, "
             f"precision {run.rt.precision})", "", "Written by `python -m bench.reference_gaps`. mIoU in %.", "",
             "## Maps stored in float16 (the reference keeps float32)", "",
             "max_diff: the largest difference between a map kept in float32 and the stored one (maps are in [0, 1]).", "",
             *markdown_table(storage),
             "## DeepLabv3+ input padded to a multiple of 16 (the reference's own DeepLabv3+ needs none)", "",
             *markdown_table([padding]),
             "## Scoring protocol (`eval.protocol`)", "",
             "images: CAMs and pseudo labels / DeepLabv3+.", "", *markdown_table(protocols(run))]
    ckpt = checkpoints(run)
    if ckpt:
        lines += ["## Last checkpoint (the reference keeps the epoch with the best mask mIoU)", "",
                  "Per-epoch mIoU on the masked training images the trainers score (TensorBoard eval/).", "",
                  *markdown_table(ckpt)]
    write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
