"""Rule segment: a folder of new photos segmented by a run's trained DeepLabv3+, and where the classifier looks.

For each photo ``<id>`` (its path below the folder without the extension, subfolders kept; stages.data.photos says
how ids stay unique whatever the names) the output folder holds, one folder per kind so that no photo's name can
meet another's file:

    masks/<id>.png              the class mask at the photo's own size (EXIF orientation applied), VOC palette
    overlays/<id>.jpg           the photo with the mask blended over it and a legend of the classes present
    cams/<id>.jpg               with ``cams``: the classifier's CAM of each tag it predicts, with its score
    thumbs/photos/<id>.jpg      the thumbnails of index.html
    thumbs/overlays/<id>.jpg
    classes.csv                 one row per photo: its size and the fraction of its pixels of each class
    failed.csv                  the photos that could not be read or segmented, each with the reason
    index.html                  thumbnails of each photo and its overlay side by side (open it from disk)
    .segmented                  the list of the files above: what a later call may replace

with the run's multi-scale, flip and dense CRF settings (``predict_segmentation``), at most ``max_side`` pixels on
the longest side (by default the longest side of the images the model was trained on, from its model.json; the
mask is then brought back to the photo's own size). A photo that fails to decode, or that would not fit in the
memory there is, is listed with its reason (and warned about) and the others are segmented. Each photo's results
are kept in a cache beside the output folder, keyed by the sha256 of the photo's bytes, the model's bytes and the
settings: segmenting the folder again with one photo added computes that photo only.

Nothing of the user's is removed: an output folder that holds a file this command did not write, or that is a
folder of the photos, lies inside one or holds one, is refused before anything is computed.

The same without Snakemake, on an installed package:

    python -m stages.segment --model results/<run>/seed_0/segmentation/pseudo_labels/model.pt PHOTOS... --out DIR
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from stages import StageError
from stages.core.gallery import (
    KINDS,
    cam_panel,
    class_fractions,
    classes_csv,
    failed_csv,
    index_html,
    kinds,
    output,
    overlay,
    save_jpeg,
    thumbnail,
)
from stages.core.job import Job, main
from stages.core.runtime import job_runtime
from stages.core.segmenter import BATCH_SIZE, memory_per_pixel, segment, too_large
from stages.core.staging import file_digest, settings_key
from stages.data.fingerprint import identity
from stages.data.photos import cache_of, find_photos, photo_digest, read_record, record_path, shown
from stages.data.voc import capped_size, open_image, resize_labels
from stages.utils.io import atomic_dir, link_or_copy, read_json, save_label_png, write_text
from stages.utils.progress import track

log = logging.getLogger("stages")

MANIFEST = ".segmented"  # in the output folder: the files segment wrote there, each a line
CACHE_MARK = ".segment-cache"  # in the cache folder: the folder is segment's


def clashes(ids: list[str], cams: bool) -> dict[str, str]:
    """id -> the id whose files would be in its way: one's file is a folder of the other's (a photo ``x`` beside
    a folder ``x.png`` of photos). The later of the two in order is the one reported."""
    files: dict[str, str] = {}
    folders: dict[str, str] = {}
    found = {}
    for image_id in ids:
        paths = [output(k, image_id) for k in kinds(cams)]
        parents = [str(p) for path in paths for p in Path(path).parents]
        other = next((o for o in [*(files.get(p) or folders.get(p) for p in paths), *map(files.get, parents)] if o), None)
        if other is not None:
            found[image_id] = other
            continue
        files.update(dict.fromkeys(paths, image_id))
        folders.update(dict.fromkeys(parents, image_id))
    return found


def refuse_output(out: Path, sources: list[Path]) -> None:
    """Stop, before anything is computed, where writing ``out`` could remove or hide a file of the user's: it is
    (or is inside, or holds) a photo or folder of photos, or it holds a file that segment did not write there, or
    its cache beside it is a folder segment did not make."""
    target = out.resolve()
    for src in sources:
        s = Path(src).resolve()
        if s == target or target.is_relative_to(s) or s.is_relative_to(target):
            where = "is" if s == target else "lies inside" if target.is_relative_to(s) else "holds"
            raise StageError(f"{shown(str(out))}: the output folder {where} the photos' {shown(str(src))}; "
                             "give a folder of its own")
    if out.exists() and not out.is_dir():
        raise StageError(f"{shown(str(out))}: not a folder; give a new or empty folder for the results")
    if out.is_dir() and any(out.iterdir()):
        manifest = out / MANIFEST
        written = set(map(os.fsdecode, manifest.read_bytes().splitlines())) if manifest.is_file() else set()
        extra = next((p for p in sorted(out.rglob("*")) if (p.is_file() or p.is_symlink()) and p != manifest
                      and p.relative_to(out).as_posix() not in written), None)
        if extra is not None or not written:
            first = f" (first: {shown(str(extra))})" if extra is not None else ""
            raise StageError(f"{shown(str(out))}: holds files segment did not write{first}; give a new or empty "
                             "folder for the results")
    cache = cache_of(out)
    if cache.exists() and not (cache / CACHE_MARK).is_file():
        raise StageError(f"{shown(str(cache))}: segment keeps its cache there, but it is not segment's; move it")


def read_photo(path: Path, max_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """The photo as the stages read it (RGB, EXIF applied), capped at ``max_side``, and its own (height, width)."""
    img = np.array(open_image(path))
    size = img.shape[:2]
    h, w = capped_size(size, max_side)
    if (h, w) != size:
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img), size


def _finish(item: tuple[str, dict], image: np.ndarray, label: np.ndarray, names: list[str]) -> str:
    """In a pool worker: a photo's mask at its own size, its overlay and thumbnails, into its cache entry
    (``item``: the photo's id and what its record holds)."""
    image_id, entry = item
    cache = Path(entry.pop("cache"))
    own = resize_labels(label, entry["size"])
    save_label_png(cache / output("mask", image_id), own)
    drawn = overlay(image, resize_labels(own, image.shape[:2]), names)
    save_jpeg(cache / output("overlay", image_id), drawn)
    save_jpeg(cache / output("thumb", image_id), thumbnail(image))
    save_jpeg(cache / output("thumb_overlay", image_id), thumbnail(drawn))
    write_text(record_path(cache, image_id), json.dumps({**entry, "fractions": class_fractions(own, len(names))}))
    return image_id


def cached_record(cache: Path, image_id: str, key: str, digest: str, cams: bool) -> dict | None:
    """The cached results of a photo, where they were computed from the same bytes, model and settings."""
    record = read_record(cache, image_id)
    if record is None or record.get("key") != key or record.get("sha256") != digest:
        return None
    return record if all((cache / output(k, image_id)).is_file() for k in kinds(cams)) else None


def cam_panels(classifier, image: np.ndarray, names: list[str], cam_cfg: dict, rt) -> np.ndarray:
    """The classifier's evidence for each tag it predicts (score >= 0.5; its best tag where none is): the CAM of
    that class over the photo, titled with the class and its score, side by side."""
    import torch

    from stages.data.transforms import normalize
    from stages.ops.cam import multiscale_cams

    x = normalize(image).to(rt.device)[None]
    with torch.no_grad(), rt.autocast():
        scores = torch.sigmoid(classifier(x).float().mean(dim=(2, 3)))[0].cpu()
    tags = [int(c) + 1 for c in torch.nonzero(scores >= 0.5).flatten()] or [int(scores.argmax()) + 1]
    cams, _ = multiscale_cams(classifier, x, cam_cfg["scales"], cam_cfg["flip"], [tags], rt.autocast)[0]
    panels = [cam_panel(image, cams[k].numpy(), f"{names[c]} {float(scores[c - 1]):.2f}") for k, c in enumerate(tags)]
    return np.concatenate(panels, axis=1)


def segment_photos(photos: dict[str, Path], model_path: Path, cfg: dict, rt, out: Path, processes: int,
                   max_side: int | None = None, classifier: Path | None = None, cam_cfg: dict | None = None,
                   title: str | None = None, failed: list[tuple[str, str]] | None = None,
                   sources: list[Path] | None = None) -> list[dict]:
    """Segment ``photos`` (id -> file) into the folder ``out`` (written whole, in one rename); returns the rows of
    classes.csv. ``failed``: photos already found unreadable (warned about here); ``sources``: the folders and files
    the photos were found in (the output may be none of them, nor inside or around one). ``classifier`` and
    ``cam_cfg``: also the CAM panels."""
    from stages.models.factory import load_classifier, load_deeplab

    out, cams = Path(out), classifier is not None
    refuse_output(out, [Path(p) for p in (sources if sources is not None else photos.values())])
    meta = read_json(Path(model_path).with_suffix(".json"))
    names = ["background", *meta["classes"]]
    max_side = max_side or meta.get("image_max_side")
    key = settings_key(cfg, max_side, file_digest(model_path), file_digest(classifier) if cams else None, cam_cfg)
    cache = cache_of(out)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / CACHE_MARK).touch()
    failed = list(failed or [])
    for path, reason in failed:
        log.warning("segment: %s: %s", shown(path), reason)
    in_the_way = clashes(list(photos), cams)
    failed += [(str(photos[i]), f"its results would be written where those of {shown(str(photos[o]))} are")
               for i, o in in_the_way.items()]
    rows, todo = [], {}
    for image_id, path in photos.items():
        if image_id in in_the_way:
            continue
        digest = photo_digest(path)
        if (record := cached_record(cache, image_id, key, digest, cams)) is not None:
            rows.append({"id": image_id, **record})
        else:
            todo[image_id] = (path, digest)
    if rows:
        log.info("segment: %d of %d photos as segmented before (same photo, model and settings); segmenting %d",
                 len(rows), len(rows) + len(todo), len(todo))
    model = load_deeplab(model_path, len(meta["classes"]), rt) if todo else None
    net = load_classifier(classifier, len(meta["classes"]), rt) if cams and todo else None
    forward = memory_per_pixel(model, rt) if todo else (0.0, 0.0)
    # photos of one size go through the network together: as many as fit at the largest size there can be
    fits = lambda b: max_side is not None and too_large((max_side, max_side), len(names), cfg, forward, rt,  # noqa: E731
                                                         processes, b) is None
    batch = max([b for b in range(1, BATCH_SIZE + 1) if fits(b)], default=1) if todo else 1

    def readable():
        for image_id, (path, digest) in todo.items():
            try:
                image, size = read_photo(path, max_side)
                if (reason := too_large(image.shape[:2], len(names), cfg, forward, rt, processes)) is not None:
                    raise StageError(f"{path}: {reason}")
            except StageError as e:
                failed.append((str(path), str(e).removeprefix(f"{path}: ")))
                log.warning("segment: %s", shown(str(e)))
                continue
            if net is not None:
                save_jpeg(cache / output("cams", image_id), cam_panels(net, image, names, cam_cfg, rt))
            entry = {"key": key, "sha256": digest, "identity": identity(path), "size": list(size), "cache": str(cache)}
            yield (image_id, entry), image

    finish = functools.partial(_finish, names=names)
    for image_id in track(segment(model, readable(), cfg, rt, processes, finish, batch) if todo else [], "segment",
                          total=len(todo)):
        rows.append({"id": image_id, **read_record(cache, image_id)})
    rows.sort(key=lambda r: r["id"])
    write_results(out, cache, rows, failed, names, cams, title or out.name)
    prune(cache, {r["id"] for r in rows})
    log.info("segment: %d photos into %s (%d could not be segmented)", len(rows), shown(str(out)), len(failed))
    return rows


def write_results(out: Path, cache: Path, rows: list[dict], failed: list[tuple[str, str]], names: list[str],
                  cams: bool, title: str) -> None:
    """The output folder from the cache, replaced whole in one rename, with the list of what it holds."""
    files = [output(k, r["id"]) for r in rows for k in kinds(cams)]
    with atomic_dir(out) as tmp:
        for f in files:
            link_or_copy(cache / f, tmp / f)
        (tmp / "classes.csv").write_text(classes_csv(rows, names))
        (tmp / "failed.csv").write_text(failed_csv(failed))
        (tmp / "index.html").write_text(index_html(title, rows, failed, names, cams))
        listing = [*files, "classes.csv", "failed.csv", "index.html"]
        (tmp / MANIFEST).write_bytes(b"".join(os.fsencode(f) + b"\n" for f in listing))


def prune(cache: Path, kept: set[str]) -> None:
    """Drop the cache entries of photos no longer in the folder (the records of other models and settings are
    overwritten as their photos are segmented again)."""
    records = cache / "records"
    for record in records.rglob("*.json") if records.is_dir() else []:
        image_id = record.relative_to(records).with_suffix("").as_posix()
        if image_id not in kept:
            record.unlink()
            for kind in KINDS:
                (cache / output(kind, image_id)).unlink(missing_ok=True)


def run(job: Job) -> None:
    rt = job_runtime(job)
    p = job.params
    photos, failed = find_photos([p.images])
    segment_photos(photos, job.input.model, p.cfg, rt, job.output.folder, job.threads, p.max_side,
                   job.input.get("classifier"), p.get("cams"), failed=failed, sources=[Path(p.images)],
                   title=f"{Path(p.images).name}: segmented by {job.input.model}")


def standalone(argv=None) -> None:
    """``python -m stages.segment --model M PHOTOS... --out DIR``: the same, without Snakemake."""
    from stages.core.runtime import make_runtime

    p = argparse.ArgumentParser(prog="python -m stages.segment", description=__doc__.splitlines()[0])
    p.add_argument("photos", nargs="+", type=Path, help="photos and folders of photos")
    p.add_argument("--model", required=True, type=Path, help="a trained DeepLabv3+ model.pt (its model.json beside it)")
    p.add_argument("--out", required=True, type=Path, help="the folder to write")
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0], help="inference scales")
    p.add_argument("--no-flip", action="store_true", help="without each scale's horizontal flip")
    p.add_argument("--crf-iterations", type=int, default=10, help="dense CRF iterations (0: none)")
    p.add_argument("--max-side", type=int, default=None,
                   help="the longest side photos are segmented at (default: the model's, from its model.json)")
    p.add_argument("--classifier", type=Path, default=None, help="a classifier model.pt: also its CAMs of each photo")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads and CRF processes")
    args = p.parse_args(argv)
    crf = {"iterations": args.crf_iterations, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3},
           "bilateral": {"sxy": 80, "srgb": 13, "compat": 10}}  # the reference's test-time CRF
    cfg = {"scales": args.scales, "flip": not args.no_flip, "crf": crf}
    cam_cfg = {"scales": args.scales, "flip": not args.no_flip} if args.classifier else None
    photos, failed = find_photos(args.photos)
    rt = make_runtime(args.device, 0, 0, args.threads, args.precision)
    segment_photos(photos, args.model, cfg, rt, args.out, args.threads, args.max_side, args.classifier, cam_cfg,
                   failed=failed, sources=args.photos)


if __name__ == "__main__":
    main(run, standalone=standalone)
