"""Rule convert_sbd: SBD's class masks (``cls/<id>.mat``, struct GTcls, field Segmentation)
to VOC palette PNGs, i.e. the SegmentationClassAug folder that train_aug needs."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.io

from stages import StageError
from stages.core.job import Job, main
from stages.core.staging import StagedOutputs
from stages.data.voc import VOC_CLASSES, check_label_values
from stages.utils.io import save_label_png
from stages.utils.progress import track

log = logging.getLogger("stages")


def read_sbd_mask(path: Path) -> np.ndarray:
    """The H x W uint8 class map of one SBD ``.mat`` file."""
    try:
        mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... on damaged files
        raise StageError(f"{path}: unreadable .mat file ({type(e).__name__}: {e})") from None
    try:
        seg = np.asarray(mat["GTcls"].Segmentation)
    except (KeyError, AttributeError):
        raise StageError(f"{path}: no GTcls.Segmentation (not an SBD cls/ file)") from None
    if seg.ndim != 2 or seg.size == 0 or not np.issubdtype(seg.dtype, np.integer):
        raise StageError(f"{path}: GTcls.Segmentation must be a 2-D integer map, got {seg.dtype} {seg.shape}")
    return seg


def convert_sbd(sbd: Path, out: Path, num_classes: int = len(VOC_CLASSES)) -> int:
    """Convert every ``<sbd>/cls/*.mat``; returns the number of masks written.

    ``out`` appears only once every mask is converted; a rerun after a failure converts only the rest."""
    cls = Path(sbd) / "cls"
    if not cls.is_dir():
        raise StageError(f"{cls}: missing folder; data.sbd must be SBD's benchmark_RELEASE/dataset")
    mats = sorted(cls.glob("*.mat"))
    if not mats:
        raise StageError(f"{cls}: no .mat files")
    staged = StagedOutputs(Path(out), ".png", "convert_sbd", num_classes, sources={m.stem: [m] for m in mats})
    todo = set(staged.todo([path.stem for path in mats]))
    for path in track([m for m in mats if m.stem in todo], "convert_sbd"):
        seg = read_sbd_mask(path)
        check_label_values(path, seg, num_classes)
        save_label_png(staged.path(path.stem), seg.astype(np.uint8))
    staged.commit()
    return len(mats)


def run(job: Job) -> None:
    n = convert_sbd(job.input.sbd, job.output.masks, len(job.params.classes))
    log.info("convert_sbd: %d masks in %s", n, job.output.masks)


if __name__ == "__main__":
    main(run)
