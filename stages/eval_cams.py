"""Rule eval_cams: mIoU of the CAMs against the masks over a sweep of background thresholds."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.core.job import Job, main, split_index
from stages.core.metrics import PROTOCOLS, LabelAgreement, Protocol, confusion, score, scored_mask
from stages.data.voc import resize_labels
from stages.ops.cam import cam_to_label
from stages.utils.io import load_npz, write_json
from stages.utils.progress import track


def thresholds(cfg: dict) -> list[float]:
    t = cfg["thresholds"]
    n = int(round((t["stop"] - t["start"]) / t["step"])) + 1
    return [round(t["start"] + i * t["step"], 4) for i in range(n)]


def eval_cams(index, ids, cams: Path, cfg: dict, protocol: Protocol = PROTOCOLS["full"]) -> dict:
    """The images ``protocol`` scores, each at its own size; how often the image-level labels differ from the masks
    is counted (an error where they come from the masks)."""
    ids = protocol.ids(ids)
    ts = thresholds(cfg)
    n = index.num_classes + 1
    conf = np.zeros((len(ts), n, n), np.int64)
    agreement = LabelAgreement(index)
    for image_id in track(ids, "eval_cams"):
        d = load_npz(cams / f"{image_id}.npz")
        gt = scored_mask(index, image_id)
        agreement.add(image_id, gt, d["keys"].tolist())
        cam = d["cam"].astype(np.float32)
        for k, t in enumerate(ts):
            conf[k] += confusion(resize_labels(cam_to_label(cam, d["keys"], t), gt.shape), gt, n)
    sweep = [{"threshold": t, **score(c, index.names_with_background, protocol)} for t, c in zip(ts, conf)]
    best = max(sweep, key=lambda r: r["miou"])
    return {"stage": "cam", "images": len(ids), "protocol": protocol.name, "best": best, "sweep": sweep,
            **agreement.result()}


def run(job: Job) -> None:
    index, ids = split_index(job)
    result = eval_cams(index, ids, job.input.cams, job.params.cfg, PROTOCOLS[job.params.protocol])
    write_json(job.output.table, {"variant": job.wildcards.variant, "split": job.input.split.stem, **result})


if __name__ == "__main__":
    main(run)
