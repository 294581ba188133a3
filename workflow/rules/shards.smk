rule gather_shards:
    input:
        labels=LABELS,
        split=gathered_split,
        shards=shard_folders,
    output:
        directory(f"{R}/{{folder}}"),
    log:
        log_of("gather_shards", "folder"),
    benchmark:
        benchmark_of("gather_shards", "folder")
    wildcard_constraints:
        folder=SHARDED_FOLDERS,
    conda:
        "../../envs/wsss.yaml"
    shell:
        "python -m stages.gather_shards --labels {input.labels:q} --split-file {input.split:q} --shards {input.shards:q}"
        " --out {output:q} > {log:q} 2>&1"
