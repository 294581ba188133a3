rule train_segmentation:
    input:
        unpack(segmentation_masks),
        unpack(segmentation_init),
        labels=LABELS,
        split=split_file("train_split"),
    output:
        model=f"{S}/segmentation/{{masks}}/model.pt",
        meta=f"{S}/segmentation/{{masks}}/model.json",
        history=f"{S}/segmentation/{{masks}}/history.csv",
    log:
        log_of("train_segmentation", "masks", root=S),
    benchmark:
        benchmark_of("train_segmentation", "masks", root=S)
    conda:
        "../../envs/wsss.yaml"
    threads: seg_threads
    resources:
        gpu=GPU,
        workers=WORKERS,
    params:
        cfg=section("segmentation", without=("upper_bound",)),
        runtime=training_runtime,
        checkpoint=f"{S}/checkpoints/train_segmentation/{{masks}}.pt",
        optional=optional_args,
    shell:
        "python -m stages.launch --gpus {resources.gpu} stages.train_segmentation --cfg {params.cfg:q} --runtime {params.runtime:q} --threads {threads}"
        " --labels {input.labels:q} --split-file {input.split:q} {params.optional}"
        " --out {output.model:q} --checkpoint {params.checkpoint:q} --workers {resources.workers} > {log:q} 2>&1"


rule predict_segmentation:
    input:
        labels=LABELS,
        split=f"{R}/labels/splits/{{split}}.txt",
        model=f"{S}/segmentation/{{masks}}/model.pt",
    output:
        sharded_output("predictions/{masks}/{split}"),
    log:
        log_of("predict_segmentation", "masks", "split", *SHARD_WILDCARDS, root=S),
    benchmark:
        benchmark_of("predict_segmentation", "masks", "split", *SHARD_WILDCARDS, root=S)
    conda:
        "../../envs/wsss.yaml"
    threads: seg_threads
    resources:
        gpu=GPU,
    params:
        shard=shard_of,
        cfg=section("predict_segmentation"),
        runtime=INFERENCE_RUNTIME,
    shell:
        "python -m stages.launch --gpus {resources.gpu} stages.predict_segmentation --cfg {params.cfg:q} --runtime {params.runtime:q} --threads {threads}"
        " --labels {input.labels:q} --split-file {input.split:q} --shard {params.shard} --model {input.model:q} --out {output:q}"
        " > {log:q} 2>&1"


rule eval_segmentation:
    input:
        labels=LABELS,
        split=f"{R}/labels/splits/{{split}}.txt",
        pred=f"{S}/predictions/{{masks}}/{{split}}",
    output:
        f"{S}/tables/segmentation_{{masks}}_{{split}}.json",
    log:
        log_of("eval_segmentation", "masks", "split", root=S),
    benchmark:
        benchmark_of("eval_segmentation", "masks", "split", root=S)
    conda:
        "../../envs/wsss.yaml"
    params:
        stage=lambda wildcards: SEG_STAGE[wildcards.masks],
    shell:
        "python -m stages.eval_masks --labels {input.labels:q} --split-file {input.split:q} --pred {input.pred:q}"
        " --stage {params.stage} --out {output:q} > {log:q} 2>&1"


if TEST_SPLITS:

    rule pack_test:
        input:
            labels=LABELS,
            split=split_file("test_split"),
            pred=f"{S}/predictions/pseudo_labels/{DATA['test_split']}",
        output:
            folder=directory(f"{S}/submission/results"),
            tar=f"{S}/submission/{config['run']}_test.tar",
        log:
            log_of("pack_test", root=S),
        benchmark:
            benchmark_of("pack_test", root=S)
        conda:
            "../../envs/wsss.yaml"
        params:
            out=folder_of("tar"),
        shell:
            "python -m stages.pack_test --labels {input.labels:q} --split-file {input.split:q} --pred {input.pred:q}"
            " --out {params.out:q} --tar {output.tar:q} > {log:q} 2>&1"
