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
            **stage(generate=DATA["generate"], classes=DATA["classes"]),
        shell:
            STAGE

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
            **stage(classes=DATA["classes"]),
        shell:
            STAGE

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
            **stage(classes=DATA["classes"], splits=list(LAYOUT.coco)),
        shell:
            STAGE

    plan(rules.convert_coco, [{}])


# The folders and files rules write: image_labels waits for them (ancient: its `data` param says when they changed).
DATASET_RULE_OUTPUTS = [
    *([str(LAYOUT.root)] if LAYOUT.generated is not None else []),
    *([str(LAYOUT.aug_masks)] if LAYOUT.sbd_masks_converted or LAYOUT.coco else []),
    *([str(LAYOUT.tags), *map(str, LAYOUT.lists.values())] if LAYOUT.coco else []),
]


rule image_labels:
    input:
        dataset=[ancient(path) for path in DATASET_RULE_OUTPUTS],
    output:
        labels=LABELS,
        splits=expand(f"{R}/labels/splits/{{split}}.txt", split=[*DATA["splits"], *TEST_SPLITS]),
    log:
        log_of("image_labels"),
    benchmark:
        benchmark_of("image_labels")
    conda:
        "../../envs/wsss.yaml"
    params:
        **stage(data=DATA, data_root=config.get("data_root"), run=config["run"]),
        # every file it reads (stats, nothing decoded): an edit in place reruns it
        data=lambda wildcards: DATASET.everything,
    shell:
        STAGE


plan(rules.image_labels, [{}])
