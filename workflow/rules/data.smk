# The dataset: generated or converted where a rule writes it, then validated and labelled by image_labels.

if LAYOUT.generated is not None:

    rule make_dataset:
        output:
            root=directory(str(LAYOUT.root)),
        log:
            log_of("make_dataset"),
        benchmark:
            benchmark_of("make_dataset")
        conda:
            "../../envs/wsss.yaml"
        params:
            **stage("make_dataset", generate=DATA["generate"], classes=DATA["classes"]),
        shell:
            LAUNCH

    plan(rules.make_dataset, [{}])


if LAYOUT.sbd_masks_converted:

    rule convert_sbd:
        input:
            sbd=str(LAYOUT.sbd),
        output:
            masks=directory(str(LAYOUT.aug_masks)),
        log:
            log_of("convert_sbd"),
        benchmark:
            benchmark_of("convert_sbd")
        conda:
            "../../envs/wsss.yaml"
        params:
            **stage("convert_sbd", classes=DATA["classes"]),
        shell:
            LAUNCH

    plan(rules.convert_sbd, [{}])


if LAYOUT.coco:

    rule convert_coco:
        input:
            **{f"instances_{split}": str(path) for split, path in LAYOUT.coco.items()},
        output:
            masks=directory(str(LAYOUT.aug_masks)),
            tags=str(LAYOUT.tags),
            lists=[str(LAYOUT.lists[split]) for split in LAYOUT.coco],
        log:
            log_of("convert_coco"),
        benchmark:
            benchmark_of("convert_coco")
        conda:
            "../../envs/wsss.yaml"
        params:
            **stage("convert_coco", classes=DATA["classes"], splits=list(LAYOUT.coco)),
        shell:
            LAUNCH

    plan(rules.convert_coco, [{}])


# The folders and files of the dataset that rules write.
DATASET_RULE_OUTPUTS = [
    *([str(LAYOUT.root)] if LAYOUT.generated is not None else []),
    *([str(LAYOUT.aug_masks)] if LAYOUT.sbd_masks_converted or LAYOUT.coco else []),
    *([str(LAYOUT.tags), *map(str, LAYOUT.lists.values())] if LAYOUT.coco else []),
]


rule image_labels:
    input:
        dataset=DATASET_RULE_OUTPUTS,
        # what it writes into the index, from the user's files (an edit that does not change it reruns nothing)
        index=lambda wildcards: DATASET.index(),
    output:
        labels=LABELS,
        splits=expand(f"{RUN_DIR}/labels/splits/{{split}}.txt", split=[*DATA["splits"], *TEST_SPLITS]),
    log:
        log_of("image_labels"),
    benchmark:
        benchmark_of("image_labels")
    conda:
        "../../envs/wsss.yaml"
    params:
        **stage("image_labels", data=DATA, data_root=config.get("data_root"), run=config["run"]),
    shell:
        LAUNCH


plan(rules.image_labels, [{}])


# A file named after a fingerprint of the dataset (workflow/rules/pipeline/dataset.py): the rules that read what it
# covers take it as an input. Writing it is all there is to do.
rule fingerprint:
    output:
        f"{RUN_DIR}/labels/fingerprints/{{name}}",
    log:
        log_of("fingerprint", "name"),
    benchmark:
        benchmark_of("fingerprint", "name")
    conda:
        "../../envs/wsss.yaml"
    shell:
        "echo 'what the rules reading {wildcards.name} depend on, as a fingerprint in its name' > {output:q} 2> {log:q}"
