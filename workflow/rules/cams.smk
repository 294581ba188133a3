rule make_cams:
    input:
        images=dataset_files(cams_split, "images"),
        labels=LABELS,
        split=lambda wildcards: f"{RUN_DIR}/labels/splits/{cams_split(wildcards)}.txt",
        model=f"{SEED_DIR}/classifier/{{variant}}/model.pt",
    output:
        cams=sharded_output("cams/{variant}"),
    log:
        log_of("make_cams", "variant", *SHARD_WILDCARDS, root=SEED_DIR),
    benchmark:
        benchmark_of("make_cams", "variant", *SHARD_WILDCARDS, root=SEED_DIR)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    params:
        **stage("make_cams", cfg=config["cams"], runtime=RUNTIME),
    shell:
        LAUNCH


# the ablation variants' CAMs are made to be scored: where the scored split has no masks, only the variant's
plan(rules.make_cams, combinations(seed=SEEDS, variant=VARIANTS if CAM_SCORED else [VARIANT]))


rule eval_cams:
    input:
        masks=dataset_files(DATA["cam_split"], "masks"),
        labels=LABELS,
        split=split_list(DATA["cam_split"]),
        cams=f"{SEED_DIR}/cams/{{variant}}",
    output:
        table=f"{SEED_DIR}/tables/cam_{{variant}}.json",
    log:
        log_of("eval_cams", "variant", root=SEED_DIR),
    benchmark:
        benchmark_of("eval_cams", "variant", root=SEED_DIR)
    conda:
        "../../envs/wsss.yaml"
    params:
        **stage("eval_cams", cfg=config["eval_cams"], protocol=config["eval"]["protocol"]),
    shell:
        LAUNCH


if CAM_SCORED:

    plan(rules.eval_cams, combinations(seed=SEEDS, variant=VARIANTS))
