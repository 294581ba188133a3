rule make_cams:
    input:
        labels=LABELS,
        split=make_cams_split,
        model=f"{S}/classifier/{{variant}}/model.pt",
    output:
        sharded_output("cams/{variant}"),
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
        shard=shard_of,
        cfg=section("cams"),
        runtime=INFERENCE_RUNTIME,
    shell:
        "python -m stages.launch --gpus {resources.gpu} stages.make_cams --cfg {params.cfg:q} --runtime {params.runtime:q} --threads {threads}"
        " --labels {input.labels:q} --split-file {input.split:q} --shard {params.shard} --model {input.model:q} --out {output:q}"
        " > {log:q} 2>&1"


rule eval_cams:
    input:
        labels=LABELS,
        split=split_file("cam_split"),
        cams=f"{S}/cams/{{variant}}",
    output:
        f"{S}/tables/cam_{{variant}}.json",
    log:
        log_of("eval_cams", "variant", root=S),
    benchmark:
        benchmark_of("eval_cams", "variant", root=S)
    conda:
        "../../envs/wsss.yaml"
    params:
        cfg=section("eval_cams"),
    shell:
        "python -m stages.eval_cams --cfg {params.cfg:q} --labels {input.labels:q} --split-file {input.split:q}"
        " --cams {input.cams:q} --variant {wildcards.variant} --out {output:q} > {log:q} 2>&1"
