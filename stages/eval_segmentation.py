"""Rule eval_segmentation: mIoU of DeepLabv3+'s predictions against the masks (row ``segmentation`` for the
model trained on the pseudo labels, ``upper_bound`` for the one trained on the ground truth)."""
from __future__ import annotations

from stages.core.job import Job, main, split_index
from stages.core.metrics import PROTOCOLS, score_label_maps
from stages.utils.io import write_json


def run(job: Job) -> None:
    index, ids = split_index(job)
    write_json(job.output.table, {"stage": job.params.stage, "split": job.wildcards.split,
                                  **score_label_maps(index, ids, job.input.pred, PROTOCOLS[job.params.protocol])})


if __name__ == "__main__":
    main(run)
