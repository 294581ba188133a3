"""Rule ablation: the paper's Table 1 (which Puzzle-CAM losses, CAM mIoU on train) from the CAM tables of every
seed: each variant's mean ± standard deviation over the seeds and its difference from the baseline with that
difference's standard error and Welch's t, so that the differences between variants can be read against the
seed-to-seed noise."""
from __future__ import annotations

import csv
import io

from stages import StageError
from stages.core.job import Job, main
from stages.core.metrics import spread, welch
from stages.ops.puzzle import VARIANTS
from stages.utils.cells import cell, min_max, plus_minus
from stages.utils.io import read_json, write_json, write_text

# CAM mIoU (%) on VOC 2012 train, ResNet-50 (the paper's Table 1); +L_p-cls alone has no exact figure there.
PAPER_CAM_MIOU = {"baseline": 47.82, "pcls": None, "re": 49.21, "puzzle": 51.53}
CHECK = "✓"
BASELINE = "baseline"


def ablation_rows(cam_tables: dict[int, list[dict]]) -> list[dict]:
    """``cam_tables``: each seed's CAM tables. One row per variant, in the paper's order: the losses used, the
    best-threshold CAM mIoU per seed with its mean, std and min-max, its difference from the baseline's mean with
    the standard error and Welch's t (where the baseline is among the variants), the paper's figure and its
    difference from the paper's baseline."""
    by_variant: dict[str, dict[str, dict]] = {}
    for seed, tables in cam_tables.items():
        for t in tables:
            by_variant.setdefault(t["variant"], {})[str(seed)] = t
    unknown = sorted(set(by_variant) - set(VARIANTS))
    if unknown:
        raise StageError(f"ablation: unknown variants {unknown} (known: {', '.join(VARIANTS)})")
    rows = []
    for name, variant in VARIANTS.items():
        if name in by_variant:
            per_seed = by_variant[name]
            if len(per_seed) != len(cam_tables):
                raise StageError(f"ablation: variant {name} has CAM tables of seeds {', '.join(per_seed)} only "
                                 f"(seeds: {', '.join(map(str, cam_tables))})")
            first = next(iter(per_seed.values()))
            miou = spread([t["best"]["miou"] for t in per_seed.values()])
            rows.append({"variant": name, "L_cls": True, "L_p-cls": variant.p_cls, "L_re": variant.re,
                         "split": first["split"], "images": first["images"],
                         "thresholds": sorted({t["best"]["threshold"] for t in per_seed.values()}),
                         "miou": miou["mean"], "miou_std": miou["std"], "miou_min": miou["min"], "miou_max": miou["max"],
                         "per_seed": {seed: t["best"]["miou"] for seed, t in per_seed.items()},
                         "paper_miou": PAPER_CAM_MIOU[name]})
    base = next((r for r in rows if r["variant"] == BASELINE), None)
    for r in rows:
        w = welch(list(base["per_seed"].values()), list(r["per_seed"].values())) if base and r is not base else {}
        r.update({"diff": w.get("diff"), "diff_se": w.get("se"), "welch_t": w.get("t"), "welch_df": w.get("df")})
        paper = r["paper_miou"]
        r["paper_diff"] = None if paper is None or r["variant"] == BASELINE else round(paper - PAPER_CAM_MIOU[BASELINE], 2)
    return rows


LOSSES = ("L_cls", "L_p-cls", "L_re")


def to_markdown(rows: list[dict]) -> str:
    seeds = list(rows[0]["per_seed"]) if rows else []
    many = len(seeds) > 1
    head = ["variant", "L_cls", "L_p-cls", "L_re", "split", "images", "bg threshold",
            "CAM mIoU (mean ± std)" if many else "CAM mIoU", "min-max", "Δ baseline", "SE", "Welch t", "paper", "paper Δ"]
    lines = ["# Ablation: CAM mIoU (%) of the Puzzle-CAM losses", "",
             "`paper`: Table 1 of the paper (ResNet-50, VOC 2012 train); `paper Δ`: its difference from its baseline.", "",
             *([f"CAM mIoU: mean ± sample standard deviation over seeds {', '.join(seeds)}, and the min-max. "
                "`Δ baseline`: the variant's mean minus the baseline's; `SE`: its standard error, "
                "sqrt(s_baseline² / n + s_variant² / n); `Welch t`: Δ / SE. "
                f"With {len(seeds)} seeds each, a Δ below about "
                f"{'2.8' if len(seeds) == 3 else 'two to three'} SE cannot be told from seed noise.", ""]
               if many else []),
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        marks = [CHECK if r[k] else "" for k in LOSSES]
        cells = [r["variant"], *marks, r["split"], cell(r["images"]), "/".join(map(cell, r["thresholds"])),
                 plus_minus(r["miou"], r["miou_std"]), min_max(r), cell(r["diff"], sign=True), cell(r["diff_se"]),
                 cell(r["welch_t"], 1, sign=True), cell(r["paper_miou"]), cell(r["paper_diff"], sign=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["variant", "L_cls", "L_p-cls", "L_re", "split", "images", "seeds", "thresholds", "miou", "miou_std",
              "miou_min", "miou_max", "diff", "diff_se", "welch_t", "welch_df", "paper_miou", "paper_diff"]


def to_csv(rows: list[dict]) -> str:
    """One row per variant, the numbers to three decimals (ablation.json holds them unrounded and per seed);
    empty where there is no value (the spread of one seed, the baseline's difference from itself)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in rows:
        cells = {**r, "seeds": " ".join(r["per_seed"]), "thresholds": " ".join(f"{t:g}" for t in r["thresholds"])}
        w.writerow(["" if cells[k] is None else round(cells[k], 3) if isinstance(cells[k], float) else cells[k]
                    for k in CSV_FIELDS])
    return buf.getvalue()


def overview_csv(rows: list[dict]) -> str:
    """The report's front-page table, the columns a reader compares (ablation.csv holds them all): each variant, its
    losses, its CAM mIoU, its difference from the baseline with Welch's t, and the paper's figure."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "losses", "CAM mIoU", "Δ baseline", "Welch t", "paper"])
    for r in rows:
        w.writerow([r["variant"], " + ".join(k for k in LOSSES if r[k]), plus_minus(r["miou"], r["miou_std"]),
                    cell(r["diff"], sign=True), cell(r["welch_t"], 1, sign=True), cell(r["paper_miou"])])
    return buf.getvalue()


def run(job: Job) -> None:
    paths = iter(job.input.tables)  # seed by seed, each seed's variants in order (the rule lists them so)
    tables = {seed: [read_json(next(paths)) for _ in job.params.variants] for seed in job.params.seeds}
    for seed, seed_tables in tables.items():
        if [t["variant"] for t in seed_tables] != list(job.params.variants):
            raise StageError(f"ablation: seed {seed}'s CAM tables are of {[t['variant'] for t in seed_tables]}, "
                             f"not of {job.params.variants}")
    rows = ablation_rows(tables)
    write_json(job.output.json, rows)
    write_text(job.output.md, to_markdown(rows))
    write_text(job.output.csv, to_csv(rows))
    write_text(job.output.overview, overview_csv(rows))


if __name__ == "__main__":
    main(run)
