SEG_STAGE = {"pseudo_labels": "segmentation", "ground_truth": "upper_bound"}


rule train_segmentation:
    input:
        unpack(segmentation_inputs),
        images=dataset_files(DATA["train_split"], "images"),
        labels=LABELS,
        split=split_list(DATA["train_split"]),
    output:
        model=f"{SEED_DIR}/segmentation/{{masks}}/model.pt",
        meta=f"{SEED_DIR}/segmentation/{{masks}}/model.json",
        history=f"{SEED_DIR}/segmentation/{{masks}}/history.csv",
        tensorboard=directory(f"{SEED_DIR}/tensorboard/train_segmentation/{{masks}}"),
    log:
        log_of("train_segmentation", "masks", root=SEED_DIR),
    benchmark:
        benchmark_of("train_segmentation", "masks", root=SEED_DIR)
    conda:
        "../../envs/wsss.yaml"
    threads: seg_threads
    resources:
        gpu=GPU,
        workers=WORKERS,
    params:
        **stage(
            "train_segmentation",
            cfg=section("segmentation", without=("upper_bound",)),
            runtime=training_runtime,
            checkpoint=lambda wildcards: f"{seed_dir(wildcards)}/checkpoints/train_segmentation/{wildcards.masks}.pt",
        ),
    shell:
        LAUNCH


plan(rules.train_segmentation, combinations(seed=SEEDS, masks=SEG_MASKS))

# (masks, split) of each seed's predictions: DeepLabv3+ on the pseudo labels on the eval split (scored or not:
# they are what the run is for) and on the split the pseudo labels are scored on (the figures' examples); the
# upper bound where it is scored.
PREDICTIONS = list(
    dict.fromkeys(
        [
            ("pseudo_labels", DATA["eval_split"]),
            *([("ground_truth", DATA["eval_split"])] if "ground_truth" in SEG_MASKS and EVAL_SCORED else []),
            ("pseudo_labels", DATA["cam_split"]),
        ]
    )
)
SCORED_PREDICTIONS = [(masks, split) for masks, split in PREDICTIONS if split in MASK_SPLITS]


rule predict_segmentation:
    input:
        images=dataset_files(lambda wildcards: wildcards.split, "images"),
        labels=LABELS,
        split=f"{RUN_DIR}/labels/splits/{{split}}.txt",
        model=f"{SEED_DIR}/segmentation/{{masks}}/model.pt",
    output:
        predictions=sharded_output("predictions/{masks}/{split}"),
    log:
        log_of("predict_segmentation", "masks", "split", *SHARD_WILDCARDS, root=SEED_DIR),
    benchmark:
        benchmark_of("predict_segmentation", "masks", "split", *SHARD_WILDCARDS, root=SEED_DIR)
    conda:
        "../../envs/wsss.yaml"
    threads: seg_threads
    resources:
        gpu=GPU,
    params:
        **stage("predict_segmentation", cfg=config["predict_segmentation"], runtime=RUNTIME),
    shell:
        LAUNCH


plan(
    rules.predict_segmentation,
    [{"seed": seed, "masks": masks, "split": split} for seed in SEEDS for masks, split in PREDICTIONS]
    + [{"seed": FIRST_SEED, "masks": "pseudo_labels", "split": split} for split in TEST_SPLITS],
)


rule eval_segmentation:
    input:
        masks=dataset_files(lambda wildcards: wildcards.split, "masks"),
        labels=LABELS,
        split=f"{RUN_DIR}/labels/splits/{{split}}.txt",
        pred=f"{SEED_DIR}/predictions/{{masks}}/{{split}}",
    output:
        table=f"{SEED_DIR}/tables/segmentation_{{masks}}_{{split}}.json",
    log:
        log_of("eval_segmentation", "masks", "split", root=SEED_DIR),
    benchmark:
        benchmark_of("eval_segmentation", "masks", "split", root=SEED_DIR)
    conda:
        "../../envs/wsss.yaml"
    params:
        **stage(
            "eval_segmentation",
            stage=lambda wildcards: SEG_STAGE[wildcards.masks],
            protocol=config["eval"]["protocol"],
        ),
    shell:
        LAUNCH


plan(
    rules.eval_segmentation,
    [{"seed": seed, "masks": masks, "split": split} for seed in SEEDS for masks, split in SCORED_PREDICTIONS],
)


if TEST_SPLITS:

    rule pack_test:
        input:
            labels=LABELS,
            split=split_list(DATA["test_split"]),
            pred=f"{SEED_DIR}/predictions/pseudo_labels/{DATA['test_split']}",
        output:
            folder=directory(f"{SEED_DIR}/submission/results"),
            tar=f"{SEED_DIR}/submission/{config['run']}_test.tar",
        log:
            log_of("pack_test", root=SEED_DIR),
        benchmark:
            benchmark_of("pack_test", root=SEED_DIR)
        conda:
            "../../envs/wsss.yaml"
        params:
            **stage("pack_test"),
        shell:
            LAUNCH

    plan(rules.pack_test, [{"seed": FIRST_SEED}])
