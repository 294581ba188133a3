# With shards > 1 each per-image stage runs as several jobs; gather_shards joins their folders (hard links).
SHARDED_FOLDERS = r"cams/[^/]+|affinity_labels|rw|pseudo_labels|predictions/[^/]+/[^/]+"


if SHARDS > 1:

    # joining is hard links: it runs where Snakemake runs, not in a cluster's queue
    localrules:
        gather_shards,

    rule gather_shards:
        input:
            labels=LABELS,
            split=gathered_split,
            shards=lambda wildcards: expand(
                f"{seed_dir(wildcards)}/shards/{wildcards.folder}/{{shard}}", shard=SHARD_NAMES
            ),
        output:
            folder=directory(f"{SEED_DIR}/{{folder}}"),
        log:
            log_of("gather_shards", "folder", root=SEED_DIR),
        benchmark:
            benchmark_of("gather_shards", "folder", root=SEED_DIR)
        wildcard_constraints:
            folder=SHARDED_FOLDERS,
        priority: CHAIN_PRIORITY
        conda:
            "../../envs/wsss.yaml"
        params:
            **stage("gather_shards"),
        shell:
            LAUNCH
