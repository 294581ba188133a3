"""Rule ablation: the paper's Table 1 (which Puzzle-CAM losses, CAM mIoU on train) from the CAM tables of every
seed: each variant's mean ± standard deviation over the seeds, so that the differences between variants can be
read against the seed-to-seed noise."""
from __future__ import annotations

from stages import StageError
from stages.core.job import Job, main
from stages.core.metrics import spread
from stages.ops.puzzle import VARIANTS
from stages.utils.io import read_json, write_json, write_text

# CAM mIoU (%) on VOC 2012 train, ResNet-50 (the paper's Table 1); +L_p-cls alone has no exact figure there.
PAPER_CAM_MIOU = {"baseline": 47.82, "pcls": None, "re": 49.21, "puzzle": 51.53}
CHECK = "✓"


def ablation_rows(cam_tables: dict[int, list[dict]]) -> list[dict]:
    """``cam_tables``: each seed's CAM tables. One row per variant, in the paper's order: the losses used, the
    best-threshold CAM mIoU per seed with its mean, std and min-max, the paper's figure."""
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
    return rows


def to_markdown(rows: list[dict]) -> str:
    seeds = list(rows[0]["per_seed"]) if rows else []
    many = len(seeds) > 1
    head = ["variant", "L_cls", "L_p-cls", "L_re", "split", "images", "bg threshold",
            "CAM mIoU (mean ± std)" if many else "CAM mIoU", "paper"]
    lines = ["# Ablation: CAM mIoU (%) of the Puzzle-CAM losses", "",
             "`paper`: Table 1 of the paper (ResNet-50, VOC 2012 train).", "",
             *([f"CAM mIoU: mean ± sample standard deviation over seeds {', '.join(seeds)}.", ""] if many else []),
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        marks = [CHECK if r[k] else "" for k in ("L_cls", "L_p-cls", "L_re")]
        paper = "-" if r["paper_miou"] is None else f"{r['paper_miou']:.2f}"
        miou = f"{r['miou']:.2f}" if r["miou_std"] is None else f"{r['miou']:.2f} ± {r['miou_std']:.2f}"
        cells = [r["variant"], *marks, r["split"], str(r["images"]), "/".join(f"{t:.2f}" for t in r["thresholds"]), miou, paper]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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


if __name__ == "__main__":
    main(run)
