rule affinity_labels:
    input:
        images=dataset_files(DATA["train_split"], "images"),
        labels=LABELS,
        split=split_list(DATA["train_split"]),
        cams=f"{S}/cams/{VARIANT}",
    output:
        labels=sharded_output("affinity_labels"),
    log:
        log_of("affinity_labels", *SHARD_WILDCARDS, root=S),
    benchmark:
        benchmark_of("affinity_labels", *SHARD_WILDCARDS, root=S)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    params:
        **stage("affinity_labels", cfg=config["affinity_labels"]),
    shell:
        STAGE


plan(rules.affinity_labels, combinations(seed=SEEDS))


rule train_affinity:
    input:
        images=dataset_files(DATA["train_split"], "images"),
        labels=LABELS,
        split=split_list(DATA["train_split"]),
        affinity_labels=f"{S}/affinity_labels",
        classifier=f"{S}/classifier/{VARIANT}/model.pt",
    output:
        model=f"{S}/affinity/model.pt",
        meta=f"{S}/affinity/model.json",
        history=f"{S}/affinity/history.csv",
        tensorboard=directory(f"{S}/tensorboard/train_affinity"),
    log:
        log_of("train_affinity", root=S),
    benchmark:
        benchmark_of("train_affinity", root=S)
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
        STAGE


plan(rules.train_affinity, combinations(seed=SEEDS))


rule random_walk:
    input:
        images=dataset_files(DATA["train_split"], "images"),
        labels=LABELS,
        split=split_list(DATA["train_split"]),
        cams=f"{S}/cams/{VARIANT}",
        model=f"{S}/affinity/model.pt",
    output:
        rw=sharded_output("rw"),
    log:
        log_of("random_walk", *SHARD_WILDCARDS, root=S),
    benchmark:
        benchmark_of("random_walk", *SHARD_WILDCARDS, root=S)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    params:
        **stage("random_walk", cfg=config["random_walk"], runtime=RUNTIME),
    shell:
        STAGE


plan(rules.random_walk, combinations(seed=SEEDS))
