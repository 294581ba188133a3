rule affinity_labels:
    input:
        labels=LABELS,
        split=split_file("train_split"),
        cams=f"{S}/cams/{VARIANT}",
    output:
        sharded_output("affinity_labels"),
    log:
        log_of("affinity_labels", *SHARD_WILDCARDS, root=S),
    benchmark:
        benchmark_of("affinity_labels", *SHARD_WILDCARDS, root=S)
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    params:
        shard=shard_of,
        cfg=section("affinity_labels"),
    shell:
        "python -m stages.affinity_labels --cfg {params.cfg:q} --threads {threads} --labels {input.labels:q}"
        " --split-file {input.split:q} --shard {params.shard} --cams {input.cams:q} --out {output:q} > {log:q} 2>&1"


rule train_affinity:
    input:
        labels=LABELS,
        split=split_file("train_split"),
        affinity_labels=f"{S}/affinity_labels",
        classifier=f"{S}/classifier/{VARIANT}/model.pt",
    output:
        model=f"{S}/affinity/model.pt",
        meta=f"{S}/affinity/model.json",
        history=f"{S}/affinity/history.csv",
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
        cfg=section("affinity"),
        runtime=training_runtime,
        checkpoint=f"{S}/checkpoints/train_affinity/affinity.pt",
    shell:
        "python -m stages.launch --gpus {resources.gpu} stages.train_affinity --cfg {params.cfg:q} --runtime {params.runtime:q} --threads {threads}"
        " --labels {input.labels:q} --split-file {input.split:q} --affinity-labels {input.affinity_labels:q}"
        " --classifier {input.classifier:q} --out {output.model:q} --checkpoint {params.checkpoint:q} --workers {resources.workers}"
        " > {log:q} 2>&1"


rule random_walk:
    input:
        labels=LABELS,
        split=split_file("train_split"),
        cams=f"{S}/cams/{VARIANT}",
        model=f"{S}/affinity/model.pt",
    output:
        sharded_output("rw"),
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
        shard=shard_of,
        cfg=section("random_walk"),
        runtime=INFERENCE_RUNTIME,
    shell:
        "python -m stages.launch --gpus {resources.gpu} stages.random_walk --cfg {params.cfg:q} --runtime {params.runtime:q} --threads {threads}"
        " --labels {input.labels:q} --split-file {input.split:q} --shard {params.shard} --cams {input.cams:q} --model {input.model:q}"
        " --out {output:q} > {log:q} 2>&1"
