rule pseudo_labels:
    input:
        labels=LABELS,
        split=split_file("train_split"),
        rw=f"{S}/rw",
    output:
        sharded_output("pseudo_labels"),
    log:
        log_of("pseudo_labels", *SHARD_WILDCARDS, root=S),
    benchmark:
        benchmark_of("pseudo_labels", *SHARD_WILDCARDS, root=S)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    params:
        shard=shard_of,
        cfg=section("pseudo_labels"),
    shell:
        "python -m stages.pseudo_labels --cfg {params.cfg:q} --threads {threads} --labels {input.labels:q}"
        " --split-file {input.split:q} --shard {params.shard} --rw {input.rw:q} --out {output:q} > {log:q} 2>&1"


rule eval_pseudo_labels:
    input:
        labels=LABELS,
        split=split_file("cam_split"),
        pred=f"{S}/pseudo_labels",
    output:
        f"{S}/tables/pseudo_labels.json",
    log:
        log_of("eval_pseudo_labels", root=S),
    benchmark:
        benchmark_of("eval_pseudo_labels", root=S)
    conda:
        "../../envs/wsss.yaml"
    shell:
        "python -m stages.eval_masks --labels {input.labels:q} --split-file {input.split:q} --pred {input.pred:q}"
        " --stage pseudo_labels --out {output:q} > {log:q} 2>&1"
