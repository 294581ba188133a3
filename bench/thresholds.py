"""python -m bench.thresholds: the thresholds the pipeline chooses, measured; writes bench/thresholds.md (the table
docs/thresholds.md shows).

On each generated dataset (config/config.yaml's, then one with large objects in heavy clutter, then one whose
objects carry a small part in their class's strong colour on a pale body), the whole pipeline after the CAMs runs
with the thresholds:

- published: the reference's and IRN's VOC values (affinity labels fg 0.40 / bg 0.10, beta 10, pseudo labels 0.35);
- auto: its default criteria (deletion on the CAMs, Otsu on the walk's maps), then each criterion on both;
- masks on 30 images: ``thresholds: masks`` on the first 30 training images;
- ceiling: the best pseudo labels of a sweep on all the training masks (``thresholds: masks`` on every training
  image: every class's thresholds and the walk's beta swept; on the embedded data also over the affinity labels'
  shares around t*), its DeepLabv3+ trained too;
- embedded only: config/config.yaml's own values, tuned on its masks.

Each dataset is one run (its classifier and CAMs shared by all its rows, each row rerunning what its thresholds
change); DeepLabv3+'s upper bound is left out. Scores: pseudo-label mIoU on the training split, DeepLabv3+ mIoU on
val (single seed; bf16 where the CPU has it).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.__main__ import device_name
from stages.utils.io import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {"thresholds": "given", "affinity_labels": {"fg_threshold": 0.40, "bg_threshold": 0.10},
             "random_walk": {"beta": 10}, "pseudo_labels": {"threshold": 0.35}}
DATASETS = {
    "embedded": {},
    "large objects, heavy clutter": {"object_scale": [0.3, 0.5], "max_clutter": 15},
    "parts": {"part_scale": [0.3, 0.5], "body_saturation": [30, 90]},
}
SETTINGS = {
    "published": PUBLISHED,
    "auto": {"thresholds": "auto"},
    "auto, deletion on both": {"thresholds": "auto",
                               "choose_thresholds": {"criterion": {"affinity_labels": "deletion", "pseudo_labels": "deletion"}}},
    "auto, otsu on both": {"thresholds": "auto",
                           "choose_thresholds": {"criterion": {"affinity_labels": "otsu", "pseudo_labels": "otsu"}}},
    "masks, 30 images": {"thresholds": "masks", "choose_thresholds": {"mask_images": 30}},
}
CEILING = "ceiling (sweep on all training masks)"
TUNED = "tuned on its masks (config.yaml)"
# the criteria compared: their pseudo labels only (DeepLabv3+ for the default's)
PSEUDO_ONLY = {"auto, deletion on both", "auto, otsu on both"}
# the ceiling's sweep: thresholds: masks on every training image, over the affinity labels' shares around t*
# (fg_share, bg_share); the defaults alone past the first dataset, where the three gave the same pseudo labels
CEILING_GRID = {"embedded": [(0.33, 0.5), (0.15, 0.5), (0.33, 0.7)]}
DEFAULT_SHARES = [(0.33, 0.5)]


def overlay(name: str, generate: dict, setting: dict) -> dict:
    slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    return {"run": f"thresholds_{slug}", "data": {"root": f"resources/thresholds_{slug}/VOCdevkit/VOC2012",
                                                   "generate": generate},
            "segmentation": {"upper_bound": False}, **setting}


def snakemake(config: dict, target: str, cores: str, extra: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=ROOT / "results", delete=False) as f:
        yaml.safe_dump(config, f)
    try:
        cmd = [sys.executable, "-m", "snakemake", target, "--cores", cores, "--configfile", "config/config.yaml", f.name,
               *extra]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"snakemake failed for {target}:\n{e.stderr[-3000:]}") from None
    finally:
        Path(f.name).unlink()


def chosen(run_dir: Path, setting: dict) -> str:
    """The thresholds a row used, in a few words."""
    if setting.get("thresholds", "given") == "given":
        return (f"fg {setting['affinity_labels']['fg_threshold']:g} / bg {setting['affinity_labels']['bg_threshold']:g},"
                f" beta {setting['random_walk']['beta']:g}, t {setting['pseudo_labels']['threshold']:g}")
    a = read_json(run_dir / "seed_0/thresholds/affinity_labels.json")["values"]["affinity_labels"]
    p = read_json(run_dir / "seed_0/thresholds/pseudo_labels.json")["values"]

    def span(values: dict) -> str:
        lo, hi = min(values.values()), max(values.values())
        return f"{lo:.2f}" if lo == hi else f"{lo:.2f}-{hi:.2f}"

    return (f"fg {span(a['fg_threshold'])} / bg {span(a['bg_threshold'])}, beta {p['random_walk']['beta']:g}, "
            f"t {span(p['pseudo_labels']['threshold'])}")


def scores(run_dir: Path) -> dict:
    rows = read_json(run_dir / "tables/miou.json")
    pick = {(r["stage"], r["split"]): r["miou"] for r in rows}
    return {"pseudo": pick[("pseudo_labels", "train")], "deeplab": pick[("segmentation", "val")]}


def measure_dataset(name: str, generate: dict, cores: str, extra: list[str], done: dict, keep) -> list[dict]:
    """The rows of one dataset; ``done`` (dataset, row) -> row holds those measured before (their runs up to date),
    ``keep(row)`` records each new one."""
    rows = []
    settings = dict(SETTINGS)
    if name == "embedded":
        cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
        settings[TUNED] = {
            "thresholds": "given", "affinity_labels": {k: cfg["affinity_labels"][k] for k in ("fg_threshold", "bg_threshold")},
            "random_walk": {"beta": cfg["random_walk"]["beta"]}, "pseudo_labels": {"threshold": cfg["pseudo_labels"]["threshold"]}}
    for label, setting in settings.items():
        if (name, label) in done:
            rows.append(done[name, label])
            continue
        config = overlay(name, generate, setting)
        run_dir = ROOT / "results" / config["run"]
        if label in PSEUDO_ONLY:
            snakemake(config, f"results/{config['run']}/seed_0/tables/pseudo_labels.json", cores, extra)
            result = {"pseudo": read_json(run_dir / "seed_0/tables/pseudo_labels.json")["miou"], "deeplab": None}
        else:
            snakemake(config, f"results/{config['run']}/tables/miou.json", cores, extra)
            result = scores(run_dir)
        rows.append({"dataset": name, "thresholds": label, **result, "chosen": chosen(run_dir, setting)})
        keep(rows[-1])
    # the ceiling: the sweep's pseudo labels first, DeepLabv3+ for the best of them
    if (name, CEILING) in done:
        return rows + [done[name, CEILING]]
    best = None
    for fg_share, bg_share in CEILING_GRID.get(name, DEFAULT_SHARES):
        setting = {"thresholds": "masks", "choose_thresholds": {"mask_images": 100000,
                                                                 "confident": {"fg_share": fg_share, "bg_share": bg_share}}}
        config = overlay(name, generate, setting)
        snakemake(config, f"results/{config['run']}/seed_0/tables/pseudo_labels.json", cores, extra)
        pseudo = read_json(ROOT / "results" / config["run"] / "seed_0/tables/pseudo_labels.json")["miou"]
        print({"dataset": name, "ceiling shares": (fg_share, bg_share), "pseudo": pseudo}, flush=True)
        if best is None or pseudo > best[0]:
            best = (pseudo, setting)
    config = overlay(name, generate, best[1])
    snakemake(config, f"results/{config['run']}/tables/miou.json", cores, extra)
    run_dir = ROOT / "results" / config["run"]
    shares = best[1]["choose_thresholds"]["confident"]
    rows.append({"dataset": name, "thresholds": CEILING, **scores(run_dir),
                 "chosen": f"{chosen(run_dir, best[1])}; shares {shares['fg_share']:g}/{shares['bg_share']:g}"})
    keep(rows[-1])
    return rows


def to_markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| dataset | thresholds | pseudo labels (train) | DeepLabv3+ (val) | values used |",
             "|---|---|---|---|---|"]
    for r in rows:
        deeplab = "-" if r["deeplab"] is None else f"{r['deeplab']:.2f}"
        lines.append(f"| {r['dataset']} | {r['thresholds']} | {r['pseudo']:.2f} | {deeplab} | {r['chosen']} |")
    lines += ["", "## Against the goal", "",
              "Differences in mIoU points, pseudo labels / DeepLabv3+. The goal: auto within 2 of the ceiling and never "
              "below published, masks within 1 of the ceiling. Ceiling: the best of the rows chosen with all the "
              "training masks (the sweep's, and on the embedded data its config's values, tuned so), per score.", "",
              "| dataset | auto - ceiling | auto - published | masks, 30 - ceiling |", "|---|---|---|---|"]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        by = {r["thresholds"]: r for r in rows if r["dataset"] == name}
        with_all_masks = [by[k] for k in (CEILING, TUNED) if k in by]
        ceiling = {k: max(r[k] for r in with_all_masks) for k in ("pseudo", "deeplab")}
        pairs = [(by["auto"], ceiling), (by["auto"], by["published"]), (by["masks, 30 images"], ceiling)]
        lines.append(f"| {name} | " + " | ".join(" / ".join(f"{a[k] - b[k]:+.2f}" for k in ("pseudo", "deeplab"))
                                                 for a, b in pairs) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--cores", default="all")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/thresholds.md")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args(argv)
    extra = ["--config", f"precision={args.precision}"]
    # each row as it is measured: a run stopped and started again measures only the rows it lacks
    record = args.out.with_suffix(".json")
    done = {(r["dataset"], r["thresholds"]): r for r in (read_json(record) if record.exists() else [])}

    def keep(row: dict) -> None:
        done[row["dataset"], row["thresholds"]] = row
        write_json(record, list(done.values()))
        print(row, flush=True)

    rows = [r for name in args.datasets for r in measure_dataset(name, DATASETS[name], args.cores, extra, done, keep)]
    header = (f"# Thresholds chosen by the pipeline\n\n`python -m bench.thresholds` on {device_name('cpu', os.cpu_count())}, precision "
              f"{args.precision} (bf16 where the CPU has AVX512-BF16), seed 0 (rows kept in {record.name} as measured). "
              "mIoU (%): pseudo labels on the 200 training images, DeepLabv3+ on the 60 val images (as the pipeline "
              "predicts and scores them). "
              "Values used: the affinity labels' fg / bg, the walk's beta and the pseudo labels' threshold t (a range: "
              "one per class).")
    write_text(args.out, to_markdown(rows, header))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
