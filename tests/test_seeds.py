"""Several seeds in one run: every seed-dependent stage once per seed, the labels shared. (The tables over the seeds,
and a seed added to a run, are tested on the micro run in tests/test_workflow.py: a second seed added to it.)"""
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
