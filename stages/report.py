"""Rule report: one seed's mIoU tables (miou.md, miou.csv, miou.json) from every scored stage."""
from __future__ import annotations

import csv
import io
import logging

from stages.core.job import Job, main, split_index
from stages.core.metrics import PROTOCOLS
from stages.data.index import missing_classes_warning
from stages.utils.cells import cell
from stages.utils.io import read_json, write_json, write_text

log = logging.getLogger("stages")

ORDER = ("cam", "pseudo_labels", "segmentation", "upper_bound")


def rows_from_tables(cam_tables, mask_tables, variant: str) -> list[dict]:
    """One row per scored stage: {stage, split, variant, miou, per_class, images, protocol[, threshold]}."""
    rows = []
    for t in cam_tables:
        best = t["best"]
        rows.append({"stage": "cam", "split": t["split"], "variant": t["variant"], "miou": best["miou"],
                     "per_class": best["per_class"], "images": t["images"], "protocol": t["protocol"],
                     "threshold": best["threshold"], **agreement_of(t)})
    for t in mask_tables:
        rows.append({"stage": t["stage"], "split": t["split"], "variant": variant if t["stage"] != "upper_bound" else None,
                     "miou": t["miou"], "per_class": t["per_class"], "images": t["images"], "protocol": t["protocol"],
                     **agreement_of(t)})
    rows.sort(key=lambda r: (ORDER.index(r["stage"]) if r["stage"] in ORDER else len(ORDER), str(r["variant"]), r["split"]))
    return rows


def agreement_of(table: dict) -> dict:
    """How often the image-level labels differed from the masks a table scored (labels from tags or XML only)."""
    return {"label_disagreement": table["label_disagreement"]} if "label_disagreement" in table else {}


def label_notes(rows: list[dict]) -> list[str]:
    """How often image-level labels read from tags or XML disagree with the masks, once per scored split."""
    by_split = {}
    for r in rows:
        if "label_disagreement" in r:
            by_split.setdefault(r["split"], r["label_disagreement"])
    return [f"- {d['source']} labels differ from the mask's classes on {d['disagree']} of {d['images']} {split} images"
            + (f" (first: {d['first']})" if d["first"] else "") for split, d in by_split.items()]


def protocol_lines(rows: list[dict]) -> list[str]:
    """The line under a table's title saying which images were scored and how the mIoU averages."""
    names = list(dict.fromkeys(r["protocol"] for r in rows))
    return [f"Scored {PROTOCOLS[name].description} (eval.protocol: {name})." for name in names] + [""] if names else []


def to_markdown(rows: list[dict], left_out: list[str] = (), notes: list[str] = (), warnings: list[str] = (),
                thresholds: list[str] = ()) -> str:
    """The table, then one line per row left out (a stage on a split without masks) with the reason, then notes."""
    classes = list(rows[0]["per_class"]) if rows else []
    head = ["stage", "split", "variant", "images", "bg threshold", "mIoU", *classes]
    lines = ["# mIoU (%)", "", *protocol_lines(rows), "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["stage"], r["split"], r["variant"], r["images"], r.get("threshold"), r["miou"], *(r["per_class"][c] for c in classes)]
        lines.append("| " + " | ".join(map(cell, cells)) + " |")
    return "\n".join(lines + table_footer(left_out, notes, warnings, thresholds)) + "\n"


def table_footer(left_out: list[str] = (), notes: list[str] = (), warnings: list[str] = (),
                 thresholds: list[str] = ()) -> list[str]:
    """Lines under a table: the rows left out (a stage on a split without masks) with the reason, notes, the
    thresholds used and how they were chosen, warnings."""
    lines = ["", "Not scored:", "", *(f"- {note}" for note in left_out)] if left_out else []
    lines += ["", "Image-level labels:", "", *notes] if notes else []
    lines += ["", "Thresholds:", "", *thresholds] if thresholds else []
    return lines + (["", *(f"**Warning:** {w}" for w in warnings)] if warnings else [])


def _values(value) -> str:
    if not isinstance(value, dict):
        return f"{value:g}"
    return ", ".join(f"{name} {v:g}" for name, v in value.items())


def describe(given: dict, records: list[dict]) -> list[str]:
    """The lines under a table on the thresholds used: ``given`` (the config's fg_threshold, bg_threshold, beta and
    threshold) where no rule chose them, else each choose rule's record."""
    if not records:
        return [f"- given in the config: affinity labels fg {given['fg_threshold']:g} / bg {given['bg_threshold']:g}, "
                f"random walk beta {given['beta']:g}, pseudo labels threshold {given['threshold']:g}"]
    lines = []
    for r in records:
        source = (f"masks, swept on the first {r['images']} images of split {r['split']}" if r["how"] == "masks"
                  else f"auto, criterion {r['criterion']}, on {r['images']} training images, no mask read")
        for section, values in r["values"].items():
            chosen = "; ".join(f"{key} {_values(v)}" for key, v in values.items())
            lines.append(f"- {section.replace('_', ' ')}: {chosen} ({source})")
        kept = [name for name, c in r["classes"].items() if c["source"] == "published"]
        if kept:
            lines.append(f"  - published values kept for {', '.join(kept)}: too few images to measure")
    return lines


def to_csv(rows: list[dict]) -> str:
    classes = list(rows[0]["per_class"]) if rows else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["stage", "split", "variant", "images", "threshold", "miou", *classes])
    for r in rows:
        w.writerow([r["stage"], r["split"], r["variant"] or "", r["images"], r.get("threshold", ""), r["miou"],
                    *("" if r["per_class"][c] is None else r["per_class"][c] for c in classes)])
    return buf.getvalue()


def missing_classes(job: Job) -> list[str]:
    """The warning under a seed's table where a class has no image in the training split."""
    index, ids = split_index(job)
    missing = index.classes_without_images(ids)
    return [missing_classes_warning(missing, f"the training split ({job.input.split.stem})")] if missing else []


def run(job: Job) -> None:
    rows = rows_from_tables([read_json(p) for p in job.input.cams], [read_json(p) for p in job.input.masks],
                            job.params.variant)
    write_json(job.output.json, rows)
    write_text(job.output.csv, to_csv(rows))
    thresholds = describe(job.params.thresholds, [read_json(p) for p in job.input.thresholds])
    write_text(job.output.md, to_markdown(rows, job.params.left_out, label_notes(rows), missing_classes(job), thresholds))


if __name__ == "__main__":
    main(run)
