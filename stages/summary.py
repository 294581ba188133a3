"""Rule summary: the mIoU tables over seeds (miou.md, miou.csv, miou.json), the report's front-page table and the
run's warnings.

Each row of the per-seed tables (a stage on a split) becomes one row with the mean, the sample standard
deviation and the min-max of its mIoU and of each class's IoU over the seeds; miou.json keeps the per-seed values.
Under the table go the warnings every job of the run wrote to its log (also in warnings.md, for the report).
"""
from __future__ import annotations

import csv
import io

from stages import StageError
from stages.core.job import Job, main, warnings_in
from stages.core.metrics import spread
from stages.report import agreement_of, describe, label_notes, protocol_lines, table_footer
from stages.utils.cells import EMPTY, cell, min_max, plus_minus
from stages.utils.io import read_json, write_json, write_text

STATS = ("std", "min", "max")


def _key(row: dict) -> tuple:
    return row["stage"], row["split"], row["variant"]


def summary_rows(tables: dict[int, list[dict]]) -> list[dict]:
    """``tables``: each seed's miou.json rows. One row per (stage, split, variant), in the tables' order."""
    seeds = list(tables)
    first = tables[seeds[0]]
    for seed, rows in tables.items():
        if [_key(r) for r in rows] != [_key(r) for r in first]:
            raise StageError(f"summary: seed {seed}'s table has other rows than seed {seeds[0]}'s; rerun its report")
    out = []
    for k, row in enumerate(first):
        per_seed = {str(seed): tables[seed][k] for seed in seeds}
        miou = spread([r["miou"] for r in per_seed.values()])
        per_class = {c: spread([r["per_class"][c] for r in per_seed.values()]) for c in row["per_class"]}
        thresholds = sorted({r["threshold"] for r in per_seed.values() if "threshold" in r})
        out.append({
            "stage": row["stage"], "split": row["split"], "variant": row["variant"], "images": row["images"],
            "protocol": row["protocol"], "seeds": seeds, "thresholds": thresholds,
            "miou": miou["mean"], **{f"miou_{s}": miou[s] for s in STATS},
            "per_class": {c: v["mean"] for c, v in per_class.items()},
            **{f"per_class_{s}": {c: v[s] for c, v in per_class.items()} for s in STATS},
            "per_seed": {seed: {k: r[k] for k in ("miou", "per_class", "threshold") if k in r} for seed, r in per_seed.items()},
            **agreement_of(row),
        })
    return out


def spread_cell(row: dict) -> str:
    """The mIoU's spread in one cell: std and min-max, '-' with one seed."""
    if row["miou_std"] is None:
        return "-"
    return f"± {cell(row['miou_std'])} ({min_max(row)})"


def to_markdown(rows: list[dict], left_out=(), notes=(), warnings=(), thresholds=()) -> str:
    """mIoU with its std and min-max over the seeds, then each class's IoU as mean ± std."""
    classes = list(rows[0]["per_class"]) if rows else []
    seeds = rows[0]["seeds"] if rows else []
    head = ["stage", "split", "variant", "images", "bg threshold", "mIoU", "std", "min-max", *classes]
    title = (f"# mIoU (%) over seeds {', '.join(map(str, seeds))}: mean, sample standard deviation, min-max"
             if len(seeds) > 1 else f"# mIoU (%), seed {seeds[0]}" if seeds else "# mIoU (%)")
    lines = [title, "", *protocol_lines(rows), "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["stage"], r["split"], cell(r["variant"]), cell(r["images"]), "/".join(map(cell, r["thresholds"])) or EMPTY,
                 cell(r["miou"]), cell(r["miou_std"]), min_max(r),
                 *(plus_minus(r["per_class"][c], r["per_class_std"][c]) for c in classes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + table_footer(left_out, notes, warnings, thresholds)) + "\n"


def threshold_lines(seeds: list[int], given: dict, files: list) -> list[str]:
    """:func:`describe` of each seed's thresholds files (two per seed where chosen), under its seed where several."""
    if not files:
        return describe(given, [])
    per_seed = [files[k:k + 2] for k in range(0, len(files), 2)]
    if len(seeds) == 1:
        return describe(given, [read_json(p) for p in per_seed[0]])
    return [line for seed, pair in zip(seeds, per_seed)
            for line in [f"- seed {seed}:", *("  " + x for x in describe(given, [read_json(p) for p in pair]))]]


def to_csv(rows: list[dict]) -> str:
    """One column per statistic: miou, miou_std, miou_min, miou_max, then <class>, <class>_std, ... (empty for None),
    to three decimals (miou.json holds them unrounded)."""
    classes = list(rows[0]["per_class"]) if rows else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    stats = ("", *(f"_{s}" for s in STATS))
    w.writerow(["stage", "split", "variant", "images", "seeds", "miou", *(f"miou{s}" for s in stats[1:]),
                *(f"{c}{s}" for c in classes for s in stats)])
    for r in rows:
        class_cells = [r[f"per_class{s}"][c] for c in classes for s in stats]
        w.writerow([r["stage"], r["split"], r["variant"] or "", r["images"], " ".join(map(str, r["seeds"])),
                    *("" if v is None else round(v, 3) for v in [r["miou"], *(r[f"miou_{s}"] for s in STATS), *class_cells])])
    return buf.getvalue()


def overview_csv(rows: list[dict]) -> str:
    """The report's front-page table, narrow enough for any number of classes: stage, split, mIoU, spread."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["stage", "split", "mIoU", "spread"])
    for r in rows:
        stage = f"{r['stage']} ({r['variant']})" if r["stage"] == "cam" else r["stage"]
        w.writerow([stage, r["split"], cell(r["miou"]), spread_cell(r)])
    return buf.getvalue()


def thresholds_md(lines: list[str]) -> str:
    return "\n".join(["# Thresholds of the run", "", *lines]) + "\n"


def warnings_md(warnings: list[str]) -> str:
    lines = ["# Warnings of the run", ""]
    return "\n".join(lines + ([f"- {w}" for w in warnings] or ["None."])) + "\n"


def run(job: Job) -> None:
    rows = summary_rows(dict(zip(job.params.seeds, (read_json(p) for p in job.input.tables))))
    warnings = warnings_in(job.params.logs)
    write_json(job.output.json, rows)
    write_text(job.output.csv, to_csv(rows))
    write_text(job.output.overview, overview_csv(rows))
    thresholds = threshold_lines(job.params.seeds, job.params.thresholds, job.input.thresholds)
    write_text(job.output.md, to_markdown(rows, job.params.left_out, label_notes(rows), warnings, thresholds))
    write_text(job.output.warnings, warnings_md(warnings))
    write_text(job.output.thresholds, thresholds_md(thresholds))


if __name__ == "__main__":
    main(run)
