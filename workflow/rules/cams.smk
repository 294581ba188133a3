rule make_cams:
    input:
        images=dataset_files(cams_split, "images"),
        labels=LABELS,
        split=lambda wildcards: f"{R}/labels/splits/{cams_split(wildcards)}.txt",
        model=f"{S}/classifier/{{variant}}/model.pt",
    output:
        cams=sharded_output("cams/{variant}"),
    log:
        log_of("make_cams", "variant", *SHARD_WILDCARDS, root=S),
    benchmark:
        benchmark_of("make_cams", "variant", *SHARD_WILDCARDS, root=S)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    params:
        **stage("make_cams", cfg=config["cams"], runtime=RUNTIME),
    shell:
        STAGE


# the ablation variants' CAMs are made to be scored: where the scored split has no masks, only the variant's
plan(rules.make_cams, combinations(seed=SEEDS, variant=VARIANTS if CAM_SCORED else [VARIANT]))


rule eval_cams:
    input:
        masks=dataset_files(DATA["cam_split"], "masks"),
        labels=LABELS,
        split=split_list(DATA["cam_split"]),
        cams=f"{S}/cams/{{variant}}",
    output:
        table=f"{S}/tables/cam_{{variant}}.json",
    log:
        log_of("eval_cams", "variant", root=S),
    benchmark:
        benchmark_of("eval_cams", "variant", root=S)
    conda:
        "../../envs/wsss.yaml"
    params:
        **stage("eval_cams", cfg=config["eval_cams"], protocol=config["eval"]["protocol"]),
    shell:
        STAGE


if CAM_SCORED:

    plan(rules.eval_cams, combinations(seed=SEEDS, variant=VARIANTS))
