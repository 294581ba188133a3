rule make_cams:
    input:
        labels=LABELS,
        split=make_cams_split,
        model=f"{S}/classifier/{{variant}}/model.pt",
    output:
        directory(f"{S}/cams/{{variant}}"),
    log:
        log_of("make_cams", "variant", root=S),
    benchmark:
        benchmark_of("make_cams", "variant", root=S)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=1,
    params:
        cfg=section("cams"),
        runtime=INFERENCE_RUNTIME,
    shell:
        "python -m stages.make_cams --cfg {params.cfg:q} --runtime {params.runtime:q} --threads {threads}"
        " --labels {input.labels:q} --split-file {input.split:q} --model {input.model:q} --out {output:q} > {log:q} 2>&1"


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
