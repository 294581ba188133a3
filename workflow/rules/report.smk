# Only splits with masks are scored; the report says which rows are left out, and why.
CAM_SCORED = DATA["cam_split"] in MASK_SPLITS
EVAL_SCORED = DATA["eval_split"] in MASK_SPLITS
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

# Predictions of a split without masks are still made: they are what the run is for.
UNSCORED_PREDICTIONS = (
    [] if EVAL_SCORED else expand(f"{R}/seed_{{seed}}/predictions/pseudo_labels/{DATA['eval_split']}", seed=SEEDS)
)


rule report:
    input:
        cams=(
            expand(f"{S}/tables/cam_{{variant}}.json", variant=config["classifier"]["variants"], allow_missing=True)
            if CAM_SCORED
            else []
        ),
        masks=([f"{S}/tables/pseudo_labels.json"] if CAM_SCORED else [])
        + (
            expand(
                f"{S}/tables/segmentation_{{masks}}_{{split}}.json",
                masks=SEG_MASKS,
                split=DATA["eval_split"],
                allow_missing=True,
            )
            if EVAL_SCORED
            else []
        )
        + ([f"{S}/tables/segmentation_pseudo_labels_{DATA['cam_split']}.json"] if CAM_SCORED else []),
        labels=LABELS,
        split=split_file("train_split"),
    output:
        md=f"{S}/tables/miou.md",
        csv=report(f"{S}/tables/miou.csv", category="Tables", subcategory="seed {seed}", caption="../report/miou.rst"),
        json=f"{S}/tables/miou.json",
    log:
        log_of("report", root=S),
    benchmark:
        benchmark_of("report", root=S)
    conda:
        "../../envs/wsss.yaml"
    params:
        tables=report_args,
        variant=VARIANT,
        out=folder_of("md"),
    shell:
        "python -m stages.report {params.tables} --labels {input.labels:q} --split-file {input.split:q} --variant {params.variant}"
        " --out {params.out:q} > {log:q} 2>&1"


rule summary:
    input:
        expand(f"{S}/tables/miou.json", seed=SEEDS),
        labels=LABELS,
        split=split_file("train_split"),
    output:
        md=f"{R}/tables/miou.md",
        csv=report(
            f"{R}/tables/miou.csv", category="Tables", subcategory="over the seeds", caption="../report/summary.rst"
        ),
        json=f"{R}/tables/miou.json",
        overview=f"{R}/tables/overview.csv",
    log:
        log_of("summary"),
    benchmark:
        benchmark_of("summary")
    conda:
        "../../envs/wsss.yaml"
    params:
        tables=seed_tables("miou.json"),
        left_out=[f"--left-out={note}" for note in LEFT_OUT],
        out=folder_of("md"),
    shell:
        "python -m stages.summary --tables {params.tables:q} {params.left_out:q} --labels {input.labels:q}"
        " --split-file {input.split:q} --out {params.out:q} > {log:q} 2>&1"


# The loss curves' names, keyed by name so that no change of the lists can mislabel a figure: the first seed's.
FIRST = f"{R}/seed_{FIRST_SEED}"
HISTORIES = {
    **{f"classifier ({v})": f"{FIRST}/classifier/{v}/history.csv" for v in config["classifier"]["variants"]},
    "AffinityNet": f"{FIRST}/affinity/history.csv",
    **{f"DeepLabv3+ ({m})": f"{FIRST}/segmentation/{m}/history.csv" for m in SEG_MASKS},
}


rule figures:
    input:
        miou=f"{R}/tables/miou.json",
        histories=list(HISTORIES.values()),
        labels=LABELS,
        split=split_file("cam_split"),
        cams=f"{FIRST}/cams/{VARIANT}",
        rw=f"{FIRST}/rw",
        pseudo_labels=f"{FIRST}/pseudo_labels",
        predictions=f"{FIRST}/predictions/pseudo_labels/{DATA['cam_split']}",
    output:
        bars=report(f"{R}/figures/miou_per_class.png", category="Figures", caption="../report/miou_per_class.rst"),
        losses=report(f"{R}/figures/loss_curves.png", category="Figures", caption="../report/loss_curves.rst"),
        examples=report(f"{R}/figures/examples.png", category="Figures", caption="../report/examples.rst"),
    log:
        log_of("figures"),
    benchmark:
        benchmark_of("figures")
    conda:
        "../../envs/wsss.yaml"
    params:
        histories=history_args,
        seed=FIRST_SEED,
        out=folder_of("bars"),
    shell:
        "python -m stages.figures --miou {input.miou:q} --histories {params.histories} --labels {input.labels:q}"
        " --split-file {input.split:q} --cams {input.cams:q} --rw {input.rw:q} --pseudo-labels {input.pseudo_labels:q}"
        " --predictions {input.predictions:q} --seed {params.seed} --out {params.out:q} > {log:q} 2>&1"


rule ablation:
    input:
        expand(f"{S}/tables/cam_{{variant}}.json", variant=config["classifier"]["variants"], seed=SEEDS),
    output:
        ABLATION,
    log:
        log_of("ablation"),
    benchmark:
        benchmark_of("ablation")
    conda:
        "../../envs/wsss.yaml"
    params:
        tables=seed_tables(*(f"cam_{v}.json" for v in config["classifier"]["variants"])),
        out=folder_of(0),
    shell:
        "python -m stages.ablation --cam-tables {params.tables:q} --out {params.out:q} > {log:q} 2>&1"
