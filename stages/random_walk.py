"""Rule random_walk: propagate the stride-4 CAMs over AffinityNet's boundary map."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stages.core.job import Job, main, split_index, thresholds_file
from stages.core.runtime import job_runtime
from stages.core.staging import StagedOutputs, inputs_key
from stages.data.transforms import normalize
from stages.models.factory import load_affinity_net
from stages.ops.random_walk import random_walk
from stages.ops.thresholds import chosen_config
from stages.utils.io import load_npz, save_npz
from stages.utils.progress import track


@torch.no_grad()
def propagate_cams(model, img: np.ndarray, cam_s4: np.ndarray, cfg: dict, rt) -> np.ndarray:
    """Random-walk class maps (K, H, W) at image resolution, divided by their global maximum."""
    h, w = img.shape[:2]
    if cam_s4.shape[0] == 0:
        return np.zeros((0, h, w), np.float32)
    x = normalize(img).to(rt.device)[None]
    with rt.autocast():
        boundary = model.boundary_prob(x)[0].float()
    seeds = torch.from_numpy(cam_s4.astype(np.float32)).to(rt.device)
    rw = random_walk(seeds, boundary, cfg["radius"], cfg["beta"], cfg["exp_times"])
    rw = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
    peak = rw.max()
    return (rw / peak if peak > 0 else rw).cpu().numpy()


def run_random_walk(index, ids, cams: Path, model_path: Path, cfg: dict, rt, out: Path) -> None:
    staged = StagedOutputs(out, ".npz", cfg, ids, inputs_key(model_path),
                           sources={i: [index.image_path(i), cams / f"{i}.npz"] for i in ids})
    model = load_affinity_net(model_path, rt)
    for image_id in track(staged.todo(ids), "random_walk"):
        d = load_npz(cams / f"{image_id}.npz")
        rw = propagate_cams(model, index.read_image(image_id), d["cam_s4"], cfg, rt)
        save_npz(staged.path(image_id), keys=d["keys"], rw=rw.astype(np.float16))
    staged.commit()


def run(job: Job) -> None:
    rt = job_runtime(job)
    index, ids = split_index(job)
    cfg = chosen_config(job.params.cfg, thresholds_file(job), "random_walk", index.classes)
    run_random_walk(index, ids, job.input.cams, job.input.model, cfg, rt, job.output.rw)


if __name__ == "__main__":
    main(run)
