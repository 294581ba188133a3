rule pseudo_labels:
    input:
        images=dataset_files(DATA["train_split"], "images"),
        labels=LABELS,
        split=split_list(DATA["train_split"]),
        rw=f"{SEED_DIR}/rw",
        thresholds=chosen_thresholds("pseudo_labels"),
    output:
        labels=sharded_output("pseudo_labels"),
    log:
        log_of("pseudo_labels", *SHARD_WILDCARDS, root=SEED_DIR),
    benchmark:
        benchmark_of("pseudo_labels", *SHARD_WILDCARDS, root=SEED_DIR)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    params:
        **stage("pseudo_labels", cfg=config["pseudo_labels"]),
    shell:
        LAUNCH


plan(rules.pseudo_labels, combinations(seed=SEEDS))


rule eval_pseudo_labels:
    input:
        masks=dataset_files(DATA["cam_split"], "masks"),
        labels=LABELS,
        split=split_list(DATA["cam_split"]),
        pred=f"{SEED_DIR}/pseudo_labels",
    output:
        table=f"{SEED_DIR}/tables/pseudo_labels.json",
    log:
        log_of("eval_pseudo_labels", root=SEED_DIR),
    benchmark:
        benchmark_of("eval_pseudo_labels", root=SEED_DIR)
    conda:
        "../../envs/wsss.yaml"
    params:
        **stage("eval_pseudo_labels", protocol=config["eval"]["protocol"]),
    shell:
        LAUNCH


if CAM_SCORED:

    plan(rules.eval_pseudo_labels, combinations(seed=SEEDS))
