# Only splits with masks are scored; the tables say which rows are left out, and why.
LEFT_OUT = [
    *(
        []
        if CAM_SCORED
        else [f"cam, pseudo_labels, segmentation on {DATA['cam_split']}: that split has no masks (data.mask_splits)"]
    ),
    *([] if EVAL_SCORED else [f"segmentation on {DATA['eval_split']}: that split has no masks (data.mask_splits)"]),
    *(
        [f"upper_bound: the training split {DATA['train_split']} has no masks to train on (data.mask_splits)"]
        if config["segmentation"]["upper_bound"] and "ground_truth" not in SEG_MASKS
        else []
    ),
]


rule report:
    input:
        cams=(
            expand(f"{SEED_DIR}/tables/cam_{{variant}}.json", variant=VARIANTS, allow_missing=True)
            if CAM_SCORED
            else []
        ),
        masks=([f"{SEED_DIR}/tables/pseudo_labels.json"] if CAM_SCORED else [])
        + [f"{SEED_DIR}/tables/segmentation_{masks}_{split}.json" for masks, split in SCORED_PREDICTIONS],
        labels=LABELS,
        split=split_list(DATA["train_split"]),
        thresholds=chosen_thresholds("affinity_labels") + chosen_thresholds("pseudo_labels"),
    output:
        md=f"{SEED_DIR}/tables/miou.md",
        csv=report(
            f"{SEED_DIR}/tables/miou.csv", category="Tables", subcategory="seed {seed}", caption="../report/miou.rst"
        ),
        json=f"{SEED_DIR}/tables/miou.json",
    log:
        log_of("report", root=SEED_DIR),
    benchmark:
        benchmark_of("report", root=SEED_DIR)
    conda:
        "../../envs/wsss.yaml"
    params:
        **stage("report", variant=VARIANT, left_out=LEFT_OUT, thresholds=GIVEN_THRESHOLDS),
    shell:
        LAUNCH


plan(rules.report, combinations(seed=SEEDS))


rule summary:
    input:
        tables=[f"{RUN_DIR}/seed_{seed}/tables/miou.json" for seed in SEEDS],
        thresholds=[
            f
            for seed in SEEDS
            for f in expand(chosen_thresholds("affinity_labels") + chosen_thresholds("pseudo_labels"), seed=seed)
        ],
    output:
        md=f"{RUN_DIR}/tables/miou.md",
        csv=report(
            f"{RUN_DIR}/tables/miou.csv",
            category="Tables",
            subcategory="over the seeds",
            caption="../report/summary.rst",
        ),
        json=f"{RUN_DIR}/tables/miou.json",
        overview=f"{RUN_DIR}/tables/overview.csv",
        warnings=report(f"{RUN_DIR}/tables/warnings.md", category="Warnings", caption="../report/warnings.rst"),
        thresholds=report(f"{RUN_DIR}/tables/thresholds.md", category="Thresholds", caption="../report/thresholds.rst"),
    log:
        log_of("summary"),
    benchmark:
        benchmark_of("summary")
    conda:
        "../../envs/wsss.yaml"
    params:
        # the logs of every job of the run: their warnings go under the table (those that exist when it is made)
        **stage("summary", seeds=SEEDS, left_out=LEFT_OUT, logs=PLANNED_LOGS, thresholds=GIVEN_THRESHOLDS),
    shell:
        LAUNCH


plan(rules.summary, [{}])


# The loss curves' names, keyed by name so that no change of the lists can mislabel a figure: the first seed's.
FIRST = f"{RUN_DIR}/seed_{FIRST_SEED}"
HISTORIES = {
    **{f"classifier ({v})": f"{FIRST}/classifier/{v}/history.csv" for v in VARIANTS},
    "AffinityNet": f"{FIRST}/affinity/history.csv",
    **{f"DeepLabv3+ ({m})": f"{FIRST}/segmentation/{m}/history.csv" for m in SEG_MASKS},
}


rule figures:
    input:
        images=dataset_files(DATA["cam_split"], "images"),
        masks=dataset_files(DATA["cam_split"], "masks"),
        miou=f"{RUN_DIR}/tables/miou.json",
        histories=list(HISTORIES.values()),
        labels=LABELS,
        split=split_list(DATA["cam_split"]),
        cams=f"{FIRST}/cams/{VARIANT}",
        rw=f"{FIRST}/rw",
        pseudo_labels=f"{FIRST}/pseudo_labels",
        predictions=f"{FIRST}/predictions/pseudo_labels/{DATA['cam_split']}",
    output:
        bars=report(f"{RUN_DIR}/figures/miou_per_class.png", category="Figures", caption="../report/miou_per_class.rst"),
        losses=report(f"{RUN_DIR}/figures/loss_curves.png", category="Figures", caption="../report/loss_curves.rst"),
        examples=report(f"{RUN_DIR}/figures/examples.png", category="Figures", caption="../report/examples.rst"),
    log:
        log_of("figures"),
    benchmark:
        benchmark_of("figures")
    conda:
        "../../envs/wsss.yaml"
    params:
        **stage("figures", histories=list(HISTORIES), seed=FIRST_SEED, examples=6),
    shell:
        LAUNCH


plan(rules.figures, [{}])


rule ablation:
    input:
        # seed by seed, each seed's variants in order: the stage reads them so
        tables=[f"{RUN_DIR}/seed_{seed}/tables/cam_{variant}.json" for seed in SEEDS for variant in VARIANTS],
    output:
        md=f"{RUN_DIR}/tables/ablation.md",
        csv=report(
            f"{RUN_DIR}/tables/ablation.csv",
            category="Tables",
            subcategory="over the seeds",
            caption="../report/ablation.rst",
        ),
        json=f"{RUN_DIR}/tables/ablation.json",
        overview=f"{RUN_DIR}/tables/ablation_overview.csv",
    log:
        log_of("ablation"),
    benchmark:
        benchmark_of("ablation")
    conda:
        "../../envs/wsss.yaml"
    params:
        **stage("ablation", seeds=SEEDS, variants=VARIANTS),
    shell:
        LAUNCH


if len(VARIANTS) > 1 and CAM_SCORED:

    plan(rules.ablation, [{}])
