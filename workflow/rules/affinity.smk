rule affinity_labels:
    input:
        labels=LABELS,
        split=split_file("train_split"),
        cams=f"{R}/cams/{VARIANT}",
    output:
        directory(f"{R}/affinity_labels"),
    log:
        log_of("affinity_labels"),
    benchmark:
        benchmark_of("affinity_labels")
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    priority: CHAIN_PRIORITY
    params:
        cfg=section("affinity_labels"),
    shell:
        "python -m stages.affinity_labels --cfg {params.cfg:q} --threads {threads} --labels {input.labels:q}"
        " --split-file {input.split:q} --cams {input.cams:q} --out {output:q} > {log:q} 2>&1"


rule train_affinity:
    input:
        labels=LABELS,
        split=split_file("train_split"),
        affinity_labels=f"{R}/affinity_labels",
        classifier=f"{R}/classifier/{VARIANT}/model.pt",
    output:
        model=f"{R}/affinity/model.pt",
        meta=f"{R}/affinity/model.json",
        history=f"{R}/affinity/history.csv",
    log:
        log_of("train_affinity"),
    benchmark:
        benchmark_of("train_affinity")
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    priority: CHAIN_PRIORITY
    resources:
        gpu=1,
        workers=WORKERS,
    params:
        cfg=section("affinity"),
        runtime=RUNTIME,
        checkpoint=f"{R}/checkpoints/train_affinity/affinity.pt",
    shell:
        "python -m stages.train_affinity --cfg {params.cfg:q} --runtime {params.runtime:q} --threads {threads}"
        " --labels {input.labels:q} --split-file {input.split:q} --affinity-labels {input.affinity_labels:q}"
        " --classifier {input.classifier:q} --out {output.model:q} --checkpoint {params.checkpoint:q} --workers {resources.workers}"
        " > {log:q} 2>&1"


rule random_walk:
    input:
        labels=LABELS,
        split=split_file("train_split"),
        cams=f"{R}/cams/{VARIANT}",
        model=f"{R}/affinity/model.pt",
    output:
        directory(f"{R}/rw"),
    log:
        log_of("random_walk"),
    benchmark:
        benchmark_of("random_walk")
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    priority: CHAIN_PRIORITY
    resources:
        gpu=1,
    params:
        cfg=section("random_walk"),
        runtime=INFERENCE_RUNTIME,
    shell:
        "python -m stages.random_walk --cfg {params.cfg:q} --runtime {params.runtime:q} --threads {threads}"
        " --labels {input.labels:q} --split-file {input.split:q} --cams {input.cams:q} --model {input.model:q}"
        " --out {output:q} > {log:q} 2>&1"
