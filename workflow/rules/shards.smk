# Joining is hard links: it runs where Snakemake runs, not in a cluster's queue.
localrules:
    gather_shards,


rule gather_shards:
    input:
        labels=LABELS,
        split=gathered_split,
        shards=shard_folders,
    output:
        directory(f"{S}/{{folder}}"),
    log:
        log_of("gather_shards", "folder", root=S),
    benchmark:
        benchmark_of("gather_shards", "folder", root=S)
    wildcard_constraints:
        folder=SHARDED_FOLDERS,
    priority: CHAIN_PRIORITY
    conda:
        "../../envs/wsss.yaml"
    shell:
        "python -m stages.gather_shards --labels {input.labels:q} --split-file {input.split:q} --shards {input.shards:q}"
        " --out {output:q} > {log:q} 2>&1"
