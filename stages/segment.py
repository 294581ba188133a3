"""Rule segment: a folder of new photos segmented by a run's trained DeepLabv3+, and where the classifier looks.

For each photo ``<id>`` (its path below the folder without the extension; subfolders are kept) the output folder
holds

    <id>.png            the class mask at the photo's own size (EXIF orientation applied), VOC palette
    <id>.overlay.jpg    the photo with the mask blended over it and a legend of the classes present
    <id>.cams.jpg       with ``cams``: the classifier's CAM of each tag it predicts, over the photo, with its score
    classes.csv         one row per photo: its size and the fraction of its pixels of each class
    failed.csv          the photos that could not be read, each with the reason
    index.html          thumbnails of each photo and its overlay side by side (open it from disk)
    thumbs/             the thumbnails

with the run's multi-scale, flip and dense CRF settings (``predict_segmentation``) and ``data.max_side``. A photo
that fails to decode is listed with its reason (and warned about) and the others are segmented. Each photo's
results are kept in a cache beside the output folder, keyed by the photo's size and modification time, the
model's bytes and the settings: segmenting the folder again with one photo added computes that photo only.

The same without Snakemake, on an installed package:

    python -m stages.segment --model results/<run>/seed_0/segmentation/pseudo_labels/model.pt PHOTOS... --out DIR
"""
from __future__ import annotations

import argparse
import csv
import functools
import html
import io
import json
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from stages import StageError
from stages.core.job import LOG_FORMAT, Job, main, runtime
from stages.core.segmenter import segment
from stages.core.staging import file_digest, settings_key
from stages.data.voc import capped_size, find_images, open_image, resize_labels
from stages.utils.io import atomic_dir, atomic_path, link_or_copy, read_json, save_label_png, voc_palette, write_text
from stages.utils.progress import track

log = logging.getLogger("stages")

PALETTE = np.array(voc_palette(), np.uint8).reshape(256, 3)
OVERLAY_ALPHA = 0.5  # the mask's weight where it is not background
THUMB = 256  # longest side of a thumbnail, in pixels
# what the files of one photo are called, by the kind of result
SUFFIXES = {"mask": ".png", "overlay": ".overlay.jpg", "cams": ".cams.jpg"}


def photos_of(paths) -> dict[str, Path]:
    """id -> file of the photos named: folders are searched (any format PIL reads; the id is the path below the
    folder without the extension), files taken as they are (the id is the file's name without the extension)."""
    found: dict[str, Path] = {}
    for path in map(Path, paths):
        if path.is_dir():
            for image_id, files in find_images(path).items():
                for f in files:  # two formats of one name: both kept, told apart by their extension
                    found[image_id if len(files) == 1 else f.relative_to(path).as_posix()] = f
        elif path.is_file():
            found[path.stem] = path
        else:
            raise StageError(f"{path}: no such photo or folder")
    return dict(sorted(found.items()))


def read_photo(path: Path, max_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """The photo as the stages read it (RGB, EXIF applied), capped at ``max_side``, and its own (height, width)."""
    img = np.array(open_image(path))
    size = img.shape[:2]
    h, w = capped_size(size, max_side)
    if (h, w) != size:
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img), size


def legend(names: list[str], classes: list[int], width: int) -> np.ndarray:
    """A strip of colour boxes and class names, one per class present, wrapped to ``width``."""
    font, scale, thick, pad = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1, 6
    entries = [(PALETTE[c], names[c]) for c in classes] or [((0, 0, 0), "nothing found")]
    rows, row, x = [], [], pad
    for colour, name in entries:
        w = 14 + 4 + cv2.getTextSize(name, font, scale, thick)[0][0] + 2 * pad
        if row and x + w > width:
            rows.append(row)
            row, x = [], pad
        row.append((x, colour, name))
        x += w
    rows.append(row)
    strip = np.full((22 * len(rows) + pad, max(width, 1), 3), 255, np.uint8)
    for r, entries_of_row in enumerate(rows):
        y = pad + 22 * r
        for x, colour, name in entries_of_row:
            cv2.rectangle(strip, (x, y), (x + 14, y + 14), tuple(int(c) for c in colour), -1)
            cv2.rectangle(strip, (x, y), (x + 14, y + 14), (0, 0, 0), 1)
            cv2.putText(strip, name, (x + 18, y + 12), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return strip


def overlay(image: np.ndarray, label: np.ndarray, names: list[str]) -> np.ndarray:
    """The photo with the mask's colours blended over every pixel that is not background, and a legend below."""
    colours = PALETTE[label].astype(np.float32)
    blend = np.where((label > 0)[..., None], (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colours, image)
    present = [int(c) for c in np.unique(label) if 0 < c < len(names)]
    return np.concatenate([blend.astype(np.uint8), legend(names, present, image.shape[1])])


def save_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    h, w = capped_size(rgb.shape[:2], THUMB)
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != rgb.shape[:2] else rgb


def class_fractions(label: np.ndarray, n: int) -> list[float]:
    """The fraction of the mask's pixels of each class 0..n-1."""
    counts = np.bincount(label.ravel(), minlength=n)[:n]
    return (counts / max(label.size, 1)).round(6).tolist()


def _finish(item: tuple[str, dict], image: np.ndarray, label: np.ndarray, names: list[str]) -> str:
    """In a pool worker: a photo's mask at its own size, its overlay and thumbnails, into its cache entry
    (``item``: the photo's id and what its record holds)."""
    image_id, entry = item
    cache = Path(entry.pop("cache"))
    own = resize_labels(label, entry["size"])
    save_label_png(cache / f"{image_id}.png", own)
    shown = overlay(image, resize_labels(own, image.shape[:2]), names)
    save_jpeg(cache / f"{image_id}.overlay.jpg", shown)
    save_jpeg(cache / "thumbs" / f"{image_id}.jpg", thumbnail(image))
    save_jpeg(cache / "thumbs" / f"{image_id}.overlay.jpg", thumbnail(shown))
    write_text(cache / f"{image_id}.json", json.dumps({**entry, "fractions": class_fractions(own, len(names))}))
    return image_id


def stat_of(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def cached_record(cache: Path, image_id: str, key: str, stat: list[int]) -> dict | None:
    """The cached results of a photo, where they were computed from the same photo, model and settings."""
    try:
        record = json.loads((cache / f"{image_id}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("key") == key and record.get("stat") == stat else None


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
    panels = []
    for k, c in enumerate(tags):
        heat = cv2.applyColorMap((cams[k].numpy() * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
        panel = (0.5 * image + 0.5 * heat).astype(np.uint8)
        title = np.full((24, image.shape[1], 3), 255, np.uint8)
        cv2.putText(title, f"{names[c]} {float(scores[c - 1]):.2f}", (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(np.concatenate([title, panel]))
    return np.concatenate(panels, axis=1)


def index_html(title: str, rows: list[dict], failed: list[tuple[str, str]], names: list[str], cams: bool) -> str:
    """Thumbnails of each photo and its overlay side by side, each linking to the full overlay; the classes found
    with their share of the photo; the photos that could not be read."""
    esc = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>",
           "body{font-family:sans-serif;margin:1em} td{padding:4px;vertical-align:top} img{max-width:256px}",
           ".classes{font-size:90%;color:#333}</style></head><body>",
           f"<h1>{esc(title)}</h1><p>{len(rows)} photos segmented"
           + (f", {len(failed)} could not be read (below)" if failed else "") + ".</p><table>"]
    for row in rows:
        i = row["id"]
        found = ", ".join(f"{esc(names[c])} {f:.0%}" for c, f in enumerate(row["fractions"]) if c and f > 0)
        links = f"<a href='{esc(i)}.overlay.jpg'>overlay</a> · <a href='{esc(i)}.png'>mask</a>"
        links += f" · <a href='{esc(i)}.cams.jpg'>CAMs</a>" if cams else ""
        out.append(f"<tr class='photo'><td><img src='thumbs/{esc(i)}.jpg' alt='{esc(i)}'></td>"
                   f"<td><a href='{esc(i)}.overlay.jpg'><img src='thumbs/{esc(i)}.overlay.jpg' alt='{esc(i)} segmented'>"
                   f"</a></td><td><b>{esc(i)}</b><br><span class='classes'>{found or 'background only'}</span><br>"
                   f"{links}</td></tr>")
    out.append("</table>")
    if failed:
        out.append("<h2>Not read</h2><ul>" + "".join(f"<li class='failed'>{esc(p)}: {esc(r)}</li>" for p, r in failed)
                   + "</ul>")
    return "\n".join(out) + "\n</body></html>\n"


def classes_csv(rows: list[dict], names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "height", "width", *names])
    for row in rows:
        w.writerow([row["id"], *row["size"], *row["fractions"]])
    return buf.getvalue()


def failed_csv(failed: list[tuple[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["photo", "reason"])
    w.writerows(failed)
    return buf.getvalue()


def segment_photos(photos: dict[str, Path], model_path: Path, cfg: dict, rt, out: Path, processes: int,
                   max_side: int | None = None, classifier: Path | None = None, cam_cfg: dict | None = None,
                   title: str | None = None) -> list[dict]:
    """Segment ``photos`` (id -> file) into the folder ``out`` (written whole, in one rename); returns the rows of
    classes.csv. ``classifier`` and ``cam_cfg``: also the CAM panels."""
    from stages.models.factory import load_classifier, load_deeplab

    meta = read_json(Path(model_path).with_suffix(".json"))
    names = ["background", *meta["classes"]]
    key = settings_key(cfg, max_side, file_digest(model_path), file_digest(classifier) if classifier else None, cam_cfg)
    cache = out.parent / f".{out.name}.cache"
    rows, failed, todo = [], [], {}
    for image_id, path in photos.items():
        stat = stat_of(path)
        if (record := cached_record(cache, image_id, key, stat)) is not None:
            rows.append({"id": image_id, **record})
        else:
            todo[image_id] = (path, stat)
    if len(todo) < len(photos):
        log.info("segment: %d of %d photos as segmented before (same photo, model and settings); segmenting %d",
                 len(photos) - len(todo), len(photos), len(todo))
    model = load_deeplab(model_path, len(meta["classes"]), rt) if todo else None
    net = load_classifier(classifier, len(meta["classes"]), rt) if classifier is not None and todo else None

    def readable():
        for image_id, (path, stat) in todo.items():
            try:
                image, size = read_photo(path, max_side)
            except StageError as e:
                failed.append((str(path), str(e).removeprefix(f"{path}: ")))
                log.warning("segment: %s", e)
                continue
            if net is not None:
                save_jpeg(cache / f"{image_id}.cams.jpg", cam_panels(net, image, names, cam_cfg, rt))
            yield (image_id, {"key": key, "stat": stat, "size": list(size), "cache": str(cache)}), image

    finish = functools.partial(_finish, names=names)
    for image_id in track(segment(model, readable(), cfg, rt, processes, finish) if todo else [], "segment",
                          total=len(todo)):
        rows.append({"id": image_id, **json.loads((cache / f"{image_id}.json").read_text())})
    rows.sort(key=lambda r: r["id"])
    with atomic_dir(out) as tmp:
        for row in rows:
            i = row["id"]
            for suffix in (".png", ".overlay.jpg", *((".cams.jpg",) if classifier else ())):
                link_or_copy(cache / f"{i}{suffix}", tmp / f"{i}{suffix}")
            for suffix in (".jpg", ".overlay.jpg"):
                link_or_copy(cache / "thumbs" / f"{i}{suffix}", tmp / "thumbs" / f"{i}{suffix}")
        (tmp / "classes.csv").write_text(classes_csv(rows, names))
        (tmp / "failed.csv").write_text(failed_csv(failed))
        (tmp / "index.html").write_text(index_html(title or out.name, rows, failed, names, classifier is not None))
    prune(cache, {r["id"] for r in rows}, key)
    log.info("segment: %d photos into %s (%d could not be read)", len(rows), out, len(failed))
    return rows


def prune(cache: Path, kept: set[str], key: str) -> None:
    """Drop the cache entries of photos no longer in the folder or of other models and settings."""
    for record in cache.rglob("*.json") if cache.is_dir() else []:
        image_id = record.relative_to(cache).with_suffix("").as_posix()
        if image_id not in kept:
            for suffix in (".json", *SUFFIXES.values()):
                (cache / f"{image_id}{suffix}").unlink(missing_ok=True)
            for suffix in (".jpg", ".overlay.jpg"):
                (cache / "thumbs" / f"{image_id}{suffix}").unlink(missing_ok=True)


def run(job: Job) -> None:
    rt = runtime(job)
    p = job.params
    segment_photos(photos_of([p.images]), job.input.model, p.cfg, rt, job.output.folder, job.threads, p.max_side,
                   job.input.get("classifier"), p.get("cams"), title=f"{Path(p.images).name}: segmented by {job.input.model}")


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
    p.add_argument("--max-side", type=int, default=None, help="the longest side photos are segmented at")
    p.add_argument("--classifier", type=Path, default=None, help="a classifier model.pt: also its CAMs of each photo")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads and CRF processes")
    args = p.parse_args(argv)
    crf = {"iterations": args.crf_iterations, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3},
           "bilateral": {"sxy": 80, "srgb": 13, "compat": 10}}  # the reference's test-time CRF
    cfg = {"scales": args.scales, "flip": not args.no_flip, "crf": crf}
    cam_cfg = {"scales": args.scales, "flip": not args.no_flip} if args.classifier else None
    rt = make_runtime(args.device, 0, 0, args.threads, args.precision)
    segment_photos(photos_of(args.photos), args.model, cfg, rt, args.out, args.threads, args.max_side,
                   args.classifier, cam_cfg)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].lstrip().startswith("{"):  # a rule's job
        main(run)
    else:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
        try:
            standalone()
        except StageError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
