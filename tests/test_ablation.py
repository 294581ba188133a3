"""The ablation table: the paper's Table 1 layout from the per-variant CAM tables."""
import json

import pytest
from conftest import run_stage

from stages import StageError
from stages.ablation import ablation_rows, to_markdown

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
    assert lines[0] == "| variant | L_cls | L_p-cls | L_re | split | images | bg threshold | CAM mIoU | paper |"
    assert lines[1:] == [
        "| baseline | ✓ |  |  | train | 1464 | 0.15 | 40.25 | 47.82 |",
        "| pcls | ✓ | ✓ |  | train | 1464 | 0.15 | 41.00 | - |",
        "| re | ✓ |  | ✓ | train | 1464 | 0.15 | 44.00 | 49.21 |",
        "| puzzle | ✓ | ✓ | ✓ | train | 1464 | 0.15 | 55.50 | 51.53 |",
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
    assert lines[0].endswith("| bg threshold | CAM mIoU (mean ± std) | paper |")
    assert lines[1:] == ["| baseline | ✓ |  |  | train | 1464 | 0.15 | 41.00 ± 1.00 | 47.82 |",
                         "| puzzle | ✓ | ✓ | ✓ | train | 1464 | 0.15 | 52.00 ± 2.00 | 51.53 |"]


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
                     output={"md": tmp_path / "tables/ablation.md", "json": tmp_path / "tables/ablation.json"},
                     params={"seeds": [7], "variants": list(OURS)})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "tables/ablation.json").read_text())
    assert [r["variant"] for r in rows] == ["baseline", "pcls", "re", "puzzle"] and rows[0]["per_seed"] == {"7": 40.25}
    assert (tmp_path / "tables/ablation.md").read_text().startswith("# Ablation")
