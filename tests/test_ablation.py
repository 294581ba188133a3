"""The ablation table: the paper's Table 1 layout from the per-variant CAM tables."""
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
from conftest import ROOT, run_stage
from pipeline.config import merged

from stages import StageError
from stages.ablation import CSV_FIELDS, ablation_rows, to_markdown

OURS = {"puzzle": 55.5, "baseline": 40.25, "re": 44.0, "pcls": 41.0}


def cam_table(variant: str, miou: float) -> dict:
    best = {"threshold": 0.15, "miou": miou, "per_class": {"background": 80.0}}
    return {"variant": variant, "split": "train", "stage": "cam", "images": 1464, "best": best, "sweep": [best]}


def test_rows_follow_the_paper_order_with_its_losses_and_figures():
    rows = ablation_rows({0: [cam_table(v, m) for v, m in OURS.items()]})
    assert [(r["variant"], r["L_cls"], r["L_p-cls"], r["L_re"]) for r in rows] == [
        ("baseline", True, False, False), ("pcls", True, True, False), ("re", True, False, True), ("puzzle", True, True, True)]
    assert [r["miou"] for r in rows] == [40.25, 41.0, 44.0, 55.5]
    assert [r["paper_miou"] for r in rows] == [47.82, None, 49.21, 51.53]
    assert all(r["thresholds"] == [0.15] and r["split"] == "train" and r["images"] == 1464 for r in rows)
    assert all(r["miou_std"] is None for r in rows)


def test_markdown_has_check_marks_and_a_dash_where_the_paper_has_no_figure():
    md = to_markdown(ablation_rows({0: [cam_table(v, m) for v, m in OURS.items()]}))
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0] == ("| variant | L_cls | L_p-cls | L_re | split | images | bg threshold | CAM mIoU | min-max | Δ baseline | "
                        "SE | Welch t | paper | paper Δ |")
    assert lines[1:] == [  # one seed: the differences, but no spread, standard error or t
        "| baseline | ✓ |  |  | train | 1464 | 0.15 | 40.25 | - | - | - | - | 47.82 | - |",
        "| pcls | ✓ | ✓ |  | train | 1464 | 0.15 | 41.00 | - | +0.75 | - | - | - | - |",
        "| re | ✓ |  | ✓ | train | 1464 | 0.15 | 44.00 | - | +3.75 | - | - | 49.21 | +1.39 |",
        "| puzzle | ✓ | ✓ | ✓ | train | 1464 | 0.15 | 55.50 | - | +15.25 | - | - | 51.53 | +3.71 |",
    ]


def test_a_subset_of_variants_gives_only_their_rows():
    rows = ablation_rows({0: [cam_table("puzzle", 50.0), cam_table("baseline", 45.0)]})
    assert [r["variant"] for r in rows] == ["baseline", "puzzle"]


def test_several_seeds_give_each_variant_its_mean_and_standard_deviation():
    rows = ablation_rows({seed: [cam_table("baseline", 40.0 + seed), cam_table("puzzle", 50.0 + 2 * seed)] for seed in (0, 1, 2)})
    assert [(r["variant"], r["miou"], r["miou_std"], r["miou_min"], r["miou_max"]) for r in rows] == [
        ("baseline", 41.0, 1.0, 40.0, 42.0), ("puzzle", 52.0, 2.0, 50.0, 54.0)]
    assert rows[1]["per_seed"] == {"0": 50.0, "1": 52.0, "2": 54.0}
    lines = [line for line in to_markdown(rows).splitlines() if line.startswith("| ")]
    assert lines[0].endswith("| bg threshold | CAM mIoU (mean ± std) | min-max | Δ baseline | SE | Welch t | paper | paper Δ |")
    # SE = sqrt(1/3 + 4/3), t = 11 / SE
    assert lines[1:] == ["| baseline | ✓ |  |  | train | 1464 | 0.15 | 41.00 ± 1.00 | 40.00-42.00 | - | - | - | 47.82 | - |",
                         "| puzzle | ✓ | ✓ | ✓ | train | 1464 | 0.15 | 52.00 ± 2.00 | 50.00-54.00 | +11.00 | 1.29 | +8.5 | 51.53 | +3.71 |"]
    assert rows[1]["diff_se"] == pytest.approx(math.sqrt(5 / 3)) and rows[1]["welch_t"] == pytest.approx(11 / math.sqrt(5 / 3))
    assert rows[1]["welch_df"] == pytest.approx((5 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2))
    assert rows[0]["diff"] is rows[0]["diff_se"] is rows[0]["welch_t"] is None


def test_a_variant_missing_from_a_seed_is_an_error():
    with pytest.raises(StageError, match=r"ablation: variant baseline has CAM tables of seeds 1 only \(seeds: 0, 1\)"):
        ablation_rows({0: [cam_table("puzzle", 50.0)], 1: [cam_table("baseline", 45.0)]})


def test_unknown_variant_is_an_error():
    with pytest.raises(StageError, match=r"ablation: unknown variants \['mystery'\]"):
        ablation_rows({0: [cam_table("mystery", 1.0)]})


def test_the_stage_writes_markdown_and_json(tmp_path):
    paths = []
    for v, m in OURS.items():
        (tmp_path / f"cam_{v}.json").write_text(json.dumps(cam_table(v, m)))
        paths.append(tmp_path / f"cam_{v}.json")
    proc = run_stage("ablation", input={"tables": paths},
                     output={"md": tmp_path / "tables/ablation.md", "json": tmp_path / "tables/ablation.json",
                             "csv": tmp_path / "tables/ablation.csv", "overview": tmp_path / "tables/ablation_overview.csv"},
                     params={"seeds": [7], "variants": list(OURS)})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "tables/ablation.json").read_text())
    assert [r["variant"] for r in rows] == ["baseline", "pcls", "re", "puzzle"] and rows[0]["per_seed"] == {"7": 40.25}
    assert (tmp_path / "tables/ablation.md").read_text().startswith("# Ablation")
    table = (tmp_path / "tables/ablation.csv").read_text().splitlines()
    assert table[0] == ",".join(CSV_FIELDS)
    assert table[1] == "baseline,True,False,False,train,1464,7,0.15,40.25,,40.25,40.25,,,,,47.82,"
    assert table[4] == "puzzle,True,True,True,train,1464,7,0.15,55.5,,55.5,55.5,15.25,,,,51.53,3.71"
    # the report's front page: the columns a reader compares, narrow enough to sit beside the DAG drawing
    overview = (tmp_path / "tables/ablation_overview.csv").read_text().splitlines()
    assert overview[0] == "variant,losses,CAM mIoU,Δ baseline,Welch t,paper"
    assert overview[1] == "baseline,L_cls,40.25,-,-,47.82"
    assert overview[4] == "puzzle,L_cls + L_p-cls + L_re,55.50,+15.25,-,51.53"


def test_without_a_baseline_there_are_no_differences():
    rows = ablation_rows({seed: [cam_table("re", 44.0 + seed), cam_table("puzzle", 50.0 + seed)] for seed in (0, 1)})
    assert all(r["diff"] is r["diff_se"] is r["welch_t"] is None for r in rows)
    assert [r["paper_diff"] for r in rows] == [1.39, 3.71]


def test_seeds_without_spread_give_a_standard_error_of_zero_and_no_t():
    rows = ablation_rows({seed: [cam_table("baseline", 40.0), cam_table("re", 42.0)] for seed in (0, 1, 2)})
    assert (rows[1]["diff"], rows[1]["diff_se"], rows[1]["welch_t"]) == (2.0, 0.0, None)


def make_ablation_commands() -> list[list[str]]:
    """The Snakemake arguments of each command ``make ablation`` runs, as make prints them (up to the shell's
    ``||``: what the recipe says where snakemake fails)."""
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(["make", "-s", "-n", "-C", str(ROOT), "ablation", f"BIN={bin_dir}"],
                          capture_output=True, text=True, check=True)
    commands = [line.split(" || ")[0] for line in proc.stdout.splitlines() if line.startswith(f"{bin_dir}/snakemake ")]
    return [shlex.split(command)[1:] for command in commands]


def test_make_ablation_trains_four_variants_by_three_seeds_and_nothing_after_their_cams(snakemake, planned_jobs,
                                                                                       workdir):
    """The ablation's plan, pinned: the run make ablation starts trains the four classifier variants once per seed
    and scores their CAMs, and nothing of the pipeline after the CAMs, on the embedded data generated in a folder of
    its own; it writes only its own run and dataset."""
    run, report = make_ablation_commands()
    args = run[run.index("--configfile"):]
    config = merged(ROOT / f for f in args[1:])
    assert config["classifier"]["variants"] == ["baseline", "pcls", "re", "puzzle"] and config["seeds"] == [0, 1, 2]
    assert report[report.index("--configfile"):report.index("--report")] == args

    proc = snakemake(workdir, "-n", *args)
    assert planned_jobs(proc) == {"fingerprint": 3, "make_dataset": 1, "image_labels": 1, "train_classifier": 12, "all": 1,
                                  "make_cams": 12, "eval_cams": 12, "ablation": 1}
    outputs = {p for line in re.findall(r"^ +output: (.+)$", proc.stdout, re.M) for p in line.split(", ")}
    own = (f"results/{config['run']}/", config["data"]["root"])
    assert outputs and all(p.startswith(own) for p in outputs), sorted(p for p in outputs if not p.startswith(own))
    embedded = merged([ROOT / "config/config.yaml"])
    assert config["run"] != embedded["run"] and config["data"]["root"] != embedded["data"]["root"]
    assert {**config["data"], "root": None} == {**embedded["data"], "root": None}  # the same generated data


@pytest.mark.parametrize("until, variants, shown", [("all", ["puzzle"], "overview.csv"),
                                                     ("all", ["baseline", "puzzle"], "overview.csv"),
                                                     ("cams", ["baseline", "puzzle"], "ablation_overview.csv"),
                                                     ("cams", ["puzzle"], None)])
def test_the_reports_front_page_shows_the_ablation_of_a_run_that_stops_after_the_cams(until, variants, shown):
    """A run with until: cams has no overview table (nothing after the CAMs is scored): its report's front page
    shows the ablation table instead, where there is one, and names no file it lacks."""
    config = {"run": "r", "seed": 0, "until": until, "classifier": {"variants": variants}}
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as Snakemake renders the page
    page = env.from_string((ROOT / "workflow/report/workflow.rst").read_text()).render(
        snakemake=SimpleNamespace(config=config))
    assert re.findall(r":file: results/r/tables/(\S+)", page) == ([shown] if shown else [])
    assert page.count(".. csv-table::") == page.count("\n\n.. csv-table::")  # a directive needs a blank line before
