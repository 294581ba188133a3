rule train_classifier:
    input:
        labels=LABELS,
        split=split_file("train_split"),
    output:
        model=f"{S}/classifier/{{variant}}/model.pt",
        meta=f"{S}/classifier/{{variant}}/model.json",
        history=f"{S}/classifier/{{variant}}/history.csv",
    log:
        log_of("train_classifier", "variant", root=S),
    benchmark:
        benchmark_of("train_classifier", "variant", root=S)
    conda:
        "../../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        workers=WORKERS,
    params:
        cfg=section("classifier", without=("variants", "variant")),
        runtime=training_runtime,
        checkpoint=f"{S}/checkpoints/train_classifier/{{variant}}.pt",
    shell:
        "python -m stages.launch --gpus {resources.gpu} stages.train_classifier --cfg {params.cfg:q} --runtime {params.runtime:q} --threads {threads}"
        " --labels {input.labels:q} --split-file {input.split:q} --variant {wildcards.variant}"
        " --out {output.model:q} --checkpoint {params.checkpoint:q} --workers {resources.workers} > {log:q} 2>&1"
