from stages import dataset_manifest

if "generate" in DATA:

    rule make_dataset:
        output:
            directory(VOC_ROOT),
        log:
            log_of("make_dataset"),
        benchmark:
            benchmark_of("make_dataset")
        conda:
            "../../envs/wsss.yaml"
        params:
            cfg=json.dumps(DATA["generate"], sort_keys=True),
            classes=",".join(DATA["classes"]),
        shell:
            "python -m stages.make_dataset --cfg {params.cfg:q}"
            " --classes {params.classes:q} --out {output:q} > {log:q} 2>&1"


if "sbd" in DATA:

    rule convert_sbd:
        input:
            data_path(DATA["sbd"]),
        output:
            directory(SBD_MASKS),
        log:
            log_of("convert_sbd"),
        benchmark:
            benchmark_of("convert_sbd")
        conda:
            "../../envs/wsss.yaml"
        params:
            num_classes=len(DATA["classes"]),
        shell:
            "python -m stages.convert_sbd --sbd {input:q} --num-classes {params.num_classes} --out {output:q} > {log:q} 2>&1"


if "coco" in DATA:

    rule convert_coco:
        input:
            unpack(lambda wildcards: {split: data_path(path) for split, path in DATA["coco"].items()}),
        output:
            masks=directory(AUG_MASKS),
            tags=TAGS,
            lists=list(COCO_LISTS.values()),
        log:
            log_of("convert_coco"),
        benchmark:
            benchmark_of("convert_coco")
        conda:
            "../../envs/wsss.yaml"
        params:
            instances=lambda wildcards, input: " ".join(
                shlex.quote(f"--instances={s}={input[s]}") for s in DATA["coco"]
            ),
            classes=",".join(DATA["classes"]),
            out=folder_of("tags"),
        shell:
            "python -m stages.convert_coco {params.instances} --classes {params.classes:q} --out {params.out:q} > {log:q} 2>&1"


FOUND_LISTS = {split: found_list(split, path) for split, path in SPLIT_LISTS.items()}
FOUND_LISTS = {split: path for split, path in FOUND_LISTS.items() if path}
# What the labels are derived from: the VOC folder, the SBD masks, the tags file and the split lists kept outside it.
DATASET_PATHS = [VOC_ROOT, *([AUG_MASKS] if AUG_MASKS else []), *([TAGS] if TAGS else []), *FOUND_LISTS.values()]
MANIFEST = f"{R}/labels/dataset_manifest.json"
# A file edited in place changes no folder's mtime: the manifest, refreshed here when the files no
# longer match it, gets a newer mtime, which reruns image_labels and what depends on a changed label.
dataset_manifest.refresh(MANIFEST, DATASET_PATHS)


rule dataset_manifest:
    input:
        DATASET_PATHS,
    output:
        MANIFEST,
    log:
        log_of("dataset_manifest"),
    benchmark:
        benchmark_of("dataset_manifest")
    conda:
        "../../envs/wsss.yaml"
    shell:
        "python -m stages.dataset_manifest --out {output:q} {input:q} > {log:q} 2>&1"


rule image_labels:
    input:
        unpack(image_labels_inputs),
    output:
        labels=LABELS,
        splits=expand(f"{R}/labels/splits/{{split}}.txt", split=DATA["splits"] + TEST_SPLITS),
    log:
        log_of("image_labels"),
    benchmark:
        benchmark_of("image_labels")
    conda:
        "../../envs/wsss.yaml"
    params:
        classes=",".join(DATA["classes"]),
        splits=",".join(DATA["splits"]),
        optional=image_labels_args,
        out=folder_of("labels"),
    shell:
        "python -m stages.image_labels --root {input.root:q} --classes {params.classes:q} --splits {params.splits:q}"
        " {params.optional} --out {params.out:q} > {log:q} 2>&1"
