"""Rule eval_pseudo_labels: mIoU of the pseudo labels against the masks of the split CAMs are scored on."""
from __future__ import annotations

from stages.core.job import Job, main, split_index
from stages.core.metrics import PROTOCOLS, score_label_maps
from stages.utils.io import write_json


def run(job: Job) -> None:
    index, ids = split_index(job)
    write_json(job.output.table, {"stage": "pseudo_labels", "split": job.input.split.stem,
                                  **score_label_maps(index, ids, job.input.pred, PROTOCOLS[job.params.protocol])})


if __name__ == "__main__":
    main(run)
