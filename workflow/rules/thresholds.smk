# thresholds: auto or masks: the affinity labels' thresholds, the walk's beta and the pseudo labels' threshold are
# chosen per class by these two rules, whose files the stages read as inputs (docs/thresholds.md).


rule choose_affinity_thresholds:
    input:
        unpack(threshold_inputs),
        labels=LABELS,
        split=split_list(DATA["train_split"]),
        cams=f"{SEED_DIR}/cams/{VARIANT}",
        classifier=f"{SEED_DIR}/classifier/{VARIANT}/model.pt",
    output:
        thresholds=f"{SEED_DIR}/thresholds/affinity_labels.json",
    log:
        log_of("choose_affinity_thresholds", root=SEED_DIR),
    benchmark:
        benchmark_of("choose_affinity_thresholds", root=SEED_DIR)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    params:
        **stage(
            "choose_affinity_thresholds",
            how=config["thresholds"],
            cfg=choose_settings("affinity_labels"),
            cams=config["cams"],
            runtime=RUNTIME,
            seed=lambda wildcards: int(wildcards.seed),
        ),
    shell:
        LAUNCH


rule choose_pseudo_thresholds:
    input:
        unpack(threshold_inputs),
        labels=LABELS,
        split=split_list(DATA["train_split"]),
        cams=f"{SEED_DIR}/cams/{VARIANT}",
        classifier=f"{SEED_DIR}/classifier/{VARIANT}/model.pt",
        affinity=f"{SEED_DIR}/affinity/model.pt",
    output:
        thresholds=f"{SEED_DIR}/thresholds/pseudo_labels.json",
    log:
        log_of("choose_pseudo_thresholds", root=SEED_DIR),
    benchmark:
        benchmark_of("choose_pseudo_thresholds", root=SEED_DIR)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    params:
        **stage(
            "choose_pseudo_thresholds",
            how=config["thresholds"],
            cfg=choose_settings("pseudo_labels"),
            cams=config["cams"],
            walk=config["random_walk"],
            runtime=RUNTIME,
            seed=lambda wildcards: int(wildcards.seed),
        ),
    shell:
        LAUNCH


if CHOSEN:

    plan(rules.choose_affinity_thresholds, combinations(seed=SEEDS))
    plan(rules.choose_pseudo_thresholds, combinations(seed=SEEDS))
