"""The tables over seeds: mean, sample standard deviation and min-max of every row, and the front-page table."""
import csv
import io
import json
import statistics

import pytest
from conftest import SEED_TABLES as TABLES
from conftest import index_file, run_stage, seed_table

from stages import StageError
from stages.summary import overview_csv, summary_rows, to_csv, to_markdown
from stages.utils.io import write_json


def test_each_row_holds_mean_std_min_max_and_the_per_seed_values():
    cam, seg = summary_rows(TABLES)
    assert cam["miou"] == pytest.approx(73.0) and cam["miou_std"] == pytest.approx(statistics.stdev([70.0, 72.0, 77.0]))
    assert (cam["miou_min"], cam["miou_max"]) == (70.0, 77.0) and cam["seeds"] == [0, 1, 2]
    assert cam["per_class"]["disc"] == 53.0 and cam["per_class_std"]["disc"] == pytest.approx(4.242640687)  # seed 2 lacks it
    assert cam["per_class_std"]["background"] == 0.0 and cam["thresholds"] == [0.3]
    assert cam["per_seed"]["2"] == {"miou": 77.0, "per_class": {"background": 80.0, "disc": None}, "threshold": 0.3}
    assert seg["miou"] == pytest.approx(62.0) and seg["thresholds"] == [] and "threshold" not in seg["per_seed"]["0"]


def test_one_seed_has_no_spread_and_its_table_reads_as_a_plain_table():
    (row,) = summary_rows({0: seed_table(70.0, 50.0, 60.0)[:1]})
    assert row["miou"] == 70.0 and row["miou_std"] is None and row["per_class_std"]["disc"] is None
    md = to_markdown([row]).splitlines()
    assert md[0] == "# mIoU (%), seed 0"
    assert md[6] == "| cam | train | puzzle | 10 | 0.30 | 70.00 | - | - | 80.00 | 50.00 |"
    assert overview_csv([row]).splitlines() == ["stage,split,mIoU,spread", "cam (puzzle),train,70.00,-"]


def test_markdown_csv_and_front_page_carry_the_same_numbers():
    rows = summary_rows(TABLES)
    md = to_markdown(rows).splitlines()
    assert md[0] == "# mIoU (%) over seeds 0, 1, 2: mean, sample standard deviation, min-max"
    assert md[2].endswith("(eval.protocol: full).")
    assert md[4] == "| stage | split | variant | images | bg threshold | mIoU | std | min-max | background | disc |"
    assert md[6] == "| cam | train | puzzle | 10 | 0.30 | 73.00 | 3.61 | 70.00-77.00 | 80.00 ± 0.00 | 53.00 ± 4.24 |"
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [float(r["miou"]) for r in parsed] == [73.0, 62.0]
    assert parsed[0]["miou_std"] == "3.606" and parsed[0]["disc_min"] == "50.0" and parsed[0]["seeds"] == "0 1 2"
    assert overview_csv(rows).splitlines() == ["stage,split,mIoU,spread", "cam (puzzle),train,73.00,± 3.61 (70.00-77.00)",
                                               "segmentation,val,62.00,± 2.65 (60.00-65.00)"]


def test_seeds_whose_tables_hold_other_rows_are_an_error():
    with pytest.raises(StageError, match="summary: seed 1's table has other rows than seed 0's"):
        summary_rows({0: seed_table(70.0, 50.0, 60.0), 1: seed_table(70.0, 50.0, 60.0)[:1]})


def test_the_stage_writes_the_tables_the_front_page_and_the_runs_warnings(tiny_index, tmp_path):
    paths = []
    for seed, table in TABLES.items():
        (tmp_path / f"{seed}.json").write_text(json.dumps(table))
        paths.append(tmp_path / f"{seed}.json")
    (tmp_path / "a.log").write_text("2026-12-01 10:00:00,000 INFO fine\n"
                                    "2026-12-01 10:00:01,000 WARNING train_classifier[puzzle]: class 'cross' has no image\n")
    (tmp_path / "b.log").write_text("2026-12-01 10:00:02,000 WARNING train_classifier[puzzle]: class 'cross' has no image\n"
                                    "2026-12-01 10:00:03,000 WARNING ck.pt: unreadable checkpoint; set aside\n")
    out = tmp_path / "tables"
    for seed in TABLES:
        for point, values in [("affinity_labels", {"affinity_labels": {"fg_threshold": {"disc": 0.7}, "bg_threshold": {"disc": 0.3}}}),
                              ("pseudo_labels", {"random_walk": {"beta": 10 * (seed + 1)}, "pseudo_labels": {"threshold": {"disc": 0.5}}})]:
            write_json(tmp_path / f"{point}_{seed}.json", {"how": "masks", "split": "val", "images": 30, "criterion": "masks",
                                                           "values": values, "classes": {"disc": {"source": "masks"}}})
    thresholds = [tmp_path / f"{point}_{seed}.json" for seed in TABLES for point in ("affinity_labels", "pseudo_labels")]
    proc = run_stage("summary", input={"tables": paths, "labels": index_file(tiny_index, tmp_path),
                                       "split": tiny_index.layout.split_file("train"), "thresholds": thresholds},
                     output={name: out / f"{stem}" for name, stem in [("md", "miou.md"), ("csv", "miou.csv"),
                                                                      ("json", "miou.json"), ("overview", "overview.csv"),
                                                                      ("warnings", "warnings.md"),
                                                                      ("thresholds", "thresholds.md")]},
                     params={"seeds": list(TABLES), "left_out": ["upper_bound: no masks"], "thresholds": {},
                             "logs": [str(tmp_path / "a.log"), str(tmp_path / "b.log"), str(tmp_path / "not_yet.log")]})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "miou.json").read_text())
    assert [r["per_seed"]["1"]["miou"] for r in rows] == [72.0, 61.0]
    source = "(masks, swept on the first 30 images of split val)"
    lines = [line for seed in TABLES for line in [
        f"- seed {seed}:", f"  - affinity labels: fg_threshold disc 0.7; bg_threshold disc 0.3 {source}",
        f"  - random walk: beta {10 * (seed + 1)} {source}", f"  - pseudo labels: threshold disc 0.5 {source}"]]
    assert (out / "miou.md").read_text().endswith(
        "Not scored:\n\n- upper_bound: no masks\n\nThresholds:\n\n" + "\n".join(lines) + "\n\n"
        "**Warning:** train_classifier[puzzle]: class 'cross' has no image\n"
        "**Warning:** ck.pt: unreadable checkpoint; set aside\n")
    assert (out / "thresholds.md").read_text() == "# Thresholds of the run\n\n" + "\n".join(lines) + "\n"
    assert (out / "warnings.md").read_text().splitlines()[2:] == [
        "- train_classifier[puzzle]: class 'cross' has no image", "- ck.pt: unreadable checkpoint; set aside"]
    assert (out / "overview.csv").read_text().startswith("stage,split,mIoU,spread\n")
