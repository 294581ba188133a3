rule make_cams:
    input:
        labels=LABELS,
        split=make_cams_split,
        model=f"{R}/classifier/{{variant}}/model.pt",
    output:
        directory(f"{R}/shards/cams/{{variant}}/{{shard}}"),
    log:
        log_of("make_cams", "variant", "shard"),
    benchmark:
        benchmark_of("make_cams", "variant", "shard")
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    params:
        cfg=section("cams"),
        runtime=INFERENCE_RUNTIME,
    shell:
        "python -m stages.launch --gpus {resources.gpu} stages.make_cams --cfg {params.cfg:q} --runtime {params.runtime:q} --threads {threads}"
        " --labels {input.labels:q} --split-file {input.split:q} --shard {wildcards.shard} --model {input.model:q} --out {output:q}"
        " > {log:q} 2>&1"


rule eval_cams:
    input:
        labels=LABELS,
        split=split_file("cam_split"),
        cams=f"{R}/cams/{{variant}}",
    output:
        f"{R}/tables/cam_{{variant}}.json",
    log:
        log_of("eval_cams", "variant"),
    benchmark:
        benchmark_of("eval_cams", "variant")
    conda:
        "../../envs/wsss.yaml"
    params:
        cfg=section("eval_cams"),
    shell:
        "python -m stages.eval_cams --cfg {params.cfg:q} --labels {input.labels:q} --split-file {input.split:q}"
        " --cams {input.cams:q} --variant {wildcards.variant} --out {output:q} > {log:q} 2>&1"
