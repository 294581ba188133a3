rule train_classifier:
    input:
        images=dataset_files(DATA["train_split"], "images"),
        labels=LABELS,
        split=split_list(DATA["train_split"]),
    output:
        model=f"{SEED_DIR}/classifier/{{variant}}/model.pt",
        meta=f"{SEED_DIR}/classifier/{{variant}}/model.json",
        history=f"{SEED_DIR}/classifier/{{variant}}/history.csv",
        tensorboard=directory(f"{SEED_DIR}/tensorboard/train_classifier/{{variant}}"),
    log:
        log_of("train_classifier", "variant", root=SEED_DIR),
    benchmark:
        benchmark_of("train_classifier", "variant", root=SEED_DIR)
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        workers=WORKERS,
    params:
        **stage(
            "train_classifier",
            cfg=section("classifier", without=("variants", "variant")),
            runtime=training_runtime,
            checkpoint=lambda wildcards: f"{seed_dir(wildcards)}/checkpoints/train_classifier/{wildcards.variant}.pt",
        ),
    shell:
        LAUNCH


plan(rules.train_classifier, combinations(seed=SEEDS, variant=VARIANTS))
