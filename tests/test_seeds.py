"""Several seeds in one run: every seed-dependent stage once per seed, the labels shared, the tables over the seeds."""
import json
import statistics

import pytest

# Two seeds on the micro dataset (the upper bound left out to save time).
SEEDS_RUN = "run: micro_seeds\nseeds: [0, 1]\nsegmentation: {upper_bound: false}\n"
PER_SEED_JOBS = {"train_classifier": 1, "make_cams": 1, "eval_cams": 1, "affinity_labels": 1, "train_affinity": 1,
                 "random_walk": 1, "pseudo_labels": 1, "eval_pseudo_labels": 1, "train_segmentation": 1,
                 "predict_segmentation": 2, "eval_segmentation": 2, "report": 1}


def seeds_config(workdir, seeds):
    (workdir / "seeds.yaml").write_text(SEEDS_RUN.replace("[0, 1]", str(seeds)))
    return ["--configfile", "config/micro.yaml", "seeds.yaml", "--config", "device=cpu"]


def test_two_seeds_run_each_seed_dependent_job_twice_and_share_the_labels(snakemake, planned_jobs, workdir):
    jobs = planned_jobs(snakemake(workdir, "-n", *seeds_config(workdir, [0, 1])))
    assert jobs == {**{rule: 2 * n for rule, n in PER_SEED_JOBS.items()}, "make_dataset": 1,
                    "fingerprint": 5, "image_labels": 1, "summary": 1, "figures": 1, "all": 1}


@pytest.fixture(scope="module")
def seeds_run(snakemake, workdir):
    snakemake(workdir, "--cores", "2", *seeds_config(workdir, [0, 1]))
    return workdir / "results" / "micro_seeds"


def test_the_summary_is_the_mean_and_std_of_the_seeds_tables(seeds_run):
    per_seed = [json.loads((seeds_run / f"seed_{seed}/tables/miou.json").read_text()) for seed in (0, 1)]
    rows = json.loads((seeds_run / "tables/miou.json").read_text())
    assert [(r["stage"], r["split"]) for r in rows] == [(r["stage"], r["split"]) for r in per_seed[0]]
    for k, row in enumerate(rows):
        values = [table[k]["miou"] for table in per_seed]
        assert row["seeds"] == [0, 1] and row["per_seed"]["1"]["miou"] == values[1]
        assert row["miou"] == pytest.approx(statistics.mean(values), abs=1e-9)
        assert row["miou_std"] == pytest.approx(statistics.stdev(values), abs=1e-9)
        assert (row["miou_min"], row["miou_max"]) == (min(values), max(values))
        for c in row["per_class"]:
            class_values = [table[k]["per_class"][c] for table in per_seed]
            assert row["per_class"][c] == pytest.approx(statistics.mean(class_values), abs=1e-9)
            assert row["per_class_std"][c] == pytest.approx(statistics.stdev(class_values), abs=1e-9)
    first = rows[0]
    md = (seeds_run / "tables/miou.md").read_text()
    assert f"| {first['miou']:.2f} | {first['miou_std']:.2f} | {first['miou_min']:.2f}-{first['miou_max']:.2f} |" in md
    overview = (seeds_run / "tables/overview.csv").read_text().splitlines()
    assert overview[0] == "stage,split,mIoU,spread" and len(overview) == 1 + len(rows)


def test_an_added_seed_runs_only_its_own_jobs_and_the_summary(snakemake, planned_jobs, seeds_run, workdir):
    proc = snakemake(workdir, "-n", *seeds_config(workdir, [0, 1, 2]))
    assert planned_jobs(proc) == {**PER_SEED_JOBS, "summary": 1, "figures": 1, "all": 1}
    assert "seed=2" in proc.stdout and "seed=0" not in proc.stdout and "seed=1" not in proc.stdout
