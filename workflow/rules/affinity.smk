rule affinity_labels:
    input:
        images=dataset_files(DATA["train_split"], "images"),
        labels=LABELS,
        split=split_list(DATA["train_split"]),
        cams=f"{SEED_DIR}/cams/{VARIANT}",
        thresholds=chosen_thresholds("affinity_labels"),
    output:
        labels=sharded_output("affinity_labels"),
    log:
        log_of("affinity_labels", *SHARD_WILDCARDS, root=SEED_DIR),
    benchmark:
        benchmark_of("affinity_labels", *SHARD_WILDCARDS, root=SEED_DIR)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    params:
        **stage("affinity_labels", cfg=config["affinity_labels"]),
    shell:
        LAUNCH


plan(rules.affinity_labels, combinations(seed=SEEDS))


rule train_affinity:
    input:
        images=dataset_files(DATA["train_split"], "images"),
        labels=LABELS,
        split=split_list(DATA["train_split"]),
        affinity_labels=f"{SEED_DIR}/affinity_labels",
        classifier=f"{SEED_DIR}/classifier/{VARIANT}/model.pt",
    output:
        model=f"{SEED_DIR}/affinity/model.pt",
        meta=f"{SEED_DIR}/affinity/model.json",
        history=f"{SEED_DIR}/affinity/history.csv",
        tensorboard=directory(f"{SEED_DIR}/tensorboard/train_affinity"),
    log:
        log_of("train_affinity", root=SEED_DIR),
    benchmark:
        benchmark_of("train_affinity", root=SEED_DIR)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        workers=WORKERS,
    params:
        **stage(
            "train_affinity",
            cfg=config["affinity"],
            runtime=training_runtime,
            checkpoint=lambda wildcards: f"{seed_dir(wildcards)}/checkpoints/train_affinity/affinity.pt",
        ),
    shell:
        LAUNCH


plan(rules.train_affinity, combinations(seed=SEEDS))


rule random_walk:
    input:
        images=dataset_files(DATA["train_split"], "images"),
        labels=LABELS,
        split=split_list(DATA["train_split"]),
        cams=f"{SEED_DIR}/cams/{VARIANT}",
        model=f"{SEED_DIR}/affinity/model.pt",
        thresholds=chosen_thresholds("pseudo_labels"),
    output:
        rw=sharded_output("rw"),
    log:
        log_of("random_walk", *SHARD_WILDCARDS, root=SEED_DIR),
    benchmark:
        benchmark_of("random_walk", *SHARD_WILDCARDS, root=SEED_DIR)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    params:
        **stage("random_walk", cfg=config["random_walk"], runtime=RUNTIME),
    shell:
        LAUNCH


plan(rules.random_walk, combinations(seed=SEEDS))
