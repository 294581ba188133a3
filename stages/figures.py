"""Rule figures: per-class IoU bars over the seeds (error bars: their standard deviation), and one seed's training
loss curves and grid of examples, as PNGs."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.pyplot as plt  # without a display, matplotlib draws with Agg
import numpy as np

from stages.core.job import Job, main, split_index
from stages.data.voc import read_mask, resize_labels
from stages.utils.io import atomic_path, load_npz, read_json, read_label_png, voc_palette

PALETTE = np.array(voc_palette(), np.uint8).reshape(256, 3)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def per_class_chart(rows: list[dict], path: Path) -> None:
    """Grouped bars: per-class IoU of every scored stage, the mean over the seeds with their standard deviation as
    error bars (none with one seed); a note instead where no split has masks."""
    if not rows:
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "No stage is scored: the scored splits have no masks.", ha="center", va="center")
        _save(fig, path)
        return
    classes = list(rows[0]["per_class"])
    seeds = rows[0]["seeds"]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(classes), 3.6))
    x = np.arange(len(classes))
    for k, row in enumerate(rows):
        values = [row["per_class"][c] or 0.0 for c in classes]
        errors = [row["per_class_std"][c] or 0.0 for c in classes] if len(seeds) > 1 else None
        stage = f"{row['stage']} {row['variant']}" if row["stage"] == "cam" else row["stage"]
        label = f"{stage} ({row['split']}): {row['miou']:.1f}" + (
            f" ± {row['miou_std']:.1f}" if row["miou_std"] is not None else "")
        ax.bar(x + (k - (len(rows) - 1) / 2) * width, values, width, yerr=errors, capsize=2, label=label)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    ax.set_title(f"Per-class IoU by stage, mean ± std over seeds {', '.join(map(str, seeds))}"
                 if len(seeds) > 1 else f"Per-class IoU by stage, seed {seeds[0]}")
    _save(fig, path)


def read_history(path: Path) -> dict[str, list[float]]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows if r.get(k)] for k in rows[0] if k not in ("lr",)}


def loss_curves(histories: dict[str, Path], seed: int, path: Path) -> None:
    """One panel per trained model: every loss term per epoch, of the models trained with ``seed``."""
    fig, axes = plt.subplots(1, len(histories), figsize=(3.4 * len(histories), 2.8), squeeze=False)
    for ax, (name, hpath) in zip(axes[0], histories.items()):
        h = read_history(hpath)
        for term, values in h.items():
            if term != "epoch":
                ax.plot(h["epoch"], values, marker=".", label=term)
        ax.set_title(f"{name}, seed {seed}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss")
    _save(fig, path)


def _heat(maps: np.ndarray, shape) -> np.ndarray:
    """Maximum over class maps, or zeros for an image without classes."""
    return maps.astype(np.float32).max(0) if len(maps) else np.zeros(shape, np.float32)


def example_grid(index, ids, cams: Path, rw: Path, pseudo: Path, pred: Path, seed: int, path: Path) -> None:
    """Rows of examples: image, ground truth (blank without masks), CAM, random walk, pseudo label, prediction,
    from the models trained with ``seed``."""
    titles = ["image", "ground truth", "CAM", "random walk", "pseudo label", "prediction"]
    fig, axes = plt.subplots(len(ids), len(titles), figsize=(2 * len(titles), 2 * len(ids)), squeeze=False)
    for r, image_id in enumerate(ids):
        img = index.read_image(image_id)
        shape = img.shape[:2]
        mask = index.mask_path(image_id)
        panels = [
            img,
            PALETTE[resize_labels(read_mask(mask), shape)] if mask.is_file() else np.full((*shape, 3), 255, np.uint8),
            _heat(load_npz(cams / f"{image_id}.npz")["cam"], shape),
            _heat(load_npz(rw / f"{image_id}.npz")["rw"], shape),
            PALETTE[read_label_png(pseudo / f"{image_id}.png")],
            PALETTE[resize_labels(read_label_png(pred / f"{image_id}.png"), shape)],
        ]
        for c, (ax, panel) in enumerate(zip(axes[r], panels)):
            ax.imshow(panel, cmap="jet", vmin=0, vmax=1) if panel.ndim == 2 else ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
        axes[r][0].set_ylabel(image_id, fontsize=7)
    fig.suptitle(f"Examples from seed {seed}", fontsize=10)
    _save(fig, path)


def run(job: Job) -> None:
    index, ids = split_index(job)
    out = job.output
    per_class_chart(read_json(job.input.miou), out.bars)
    loss_curves(dict(zip(job.params.histories, job.input.histories)), job.params.seed, out.losses)
    ids = ids[: job.params.examples]
    example_grid(index, ids, job.input.cams, job.input.rw, job.input.pseudo_labels, job.input.predictions,
                 job.params.seed, out.examples)


if __name__ == "__main__":
    main(run)
