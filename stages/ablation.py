"""Rule ablation: the paper's Table 1 (which Puzzle-CAM losses, CAM mIoU on train) from the CAM tables."""
from __future__ import annotations

from pathlib import Path

from stages import StageError, cli
from stages.io import read_json, write_json, write_text
from stages.ops.puzzle import VARIANTS

# CAM mIoU (%) on VOC 2012 train, ResNet-50 (the paper's Table 1); +L_p-cls alone has no exact figure there.
PAPER_CAM_MIOU = {"baseline": 47.82, "pcls": None, "re": 49.21, "puzzle": 51.53}
CHECK = "✓"


def ablation_rows(cam_tables: list[dict]) -> list[dict]:
    """One row per variant, in the paper's order: the losses used, our best-threshold CAM mIoU, the paper's."""
    by_variant = {t["variant"]: t for t in cam_tables}
    unknown = sorted(set(by_variant) - set(VARIANTS))
    if unknown:
        raise StageError(f"ablation: unknown variants {unknown} (known: {', '.join(VARIANTS)})")
    rows = []
    for name, variant in VARIANTS.items():
        if name in by_variant:
            t = by_variant[name]
            rows.append({"variant": name, "L_cls": True, "L_p-cls": variant.p_cls, "L_re": variant.re,
                         "split": t["split"], "images": t["images"], "threshold": t["best"]["threshold"],
                         "miou": t["best"]["miou"], "paper_miou": PAPER_CAM_MIOU[name]})
    return rows


def to_markdown(rows: list[dict]) -> str:
    head = ["variant", "L_cls", "L_p-cls", "L_re", "split", "images", "bg threshold", "CAM mIoU", "paper"]
    lines = ["# Ablation: CAM mIoU (%) of the Puzzle-CAM losses", "",
             "`paper`: Table 1 of the paper (ResNet-50, VOC 2012 train).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        marks = [CHECK if r[k] else "" for k in ("L_cls", "L_p-cls", "L_re")]
        paper = "-" if r["paper_miou"] is None else f"{r['paper_miou']:.2f}"
        cells = [r["variant"], *marks, r["split"], str(r["images"]), f"{r['threshold']:.2f}", f"{r['miou']:.2f}", paper]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(p):
    p.add_argument("--cam-tables", nargs="+", type=Path, required=True, help="tables/cam_<variant>.json")
    p.add_argument("--out", required=True, type=Path, help="tables folder: ablation.md, ablation.json")


def run(args):
    rows = ablation_rows([read_json(p) for p in args.cam_tables])
    write_json(args.out / "ablation.json", rows)
    write_text(args.out / "ablation.md", to_markdown(rows))


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
