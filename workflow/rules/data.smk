from stages import dataset_manifest


if "generate" in DATA:

    rule make_dataset:
        output:
            directory(VOC_ROOT),
        params:
            cfg=json.dumps(DATA["generate"], sort_keys=True),
            runtime=json.dumps({"seed": config["seed"]}),
            classes=",".join(DATA["classes"]),
        log:
            log_of("make_dataset"),
        benchmark:
            benchmark_of("make_dataset")
        shell:
            "python -m stages.make_dataset --cfg {params.cfg:q} --runtime {params.runtime:q}"
            " --classes {params.classes:q} --out {output:q} > {log:q} 2>&1"


if "sbd" in DATA:

    rule convert_sbd:
        input:
            data_path(DATA["sbd"]),
        output:
            directory(SBD_MASKS),
        params:
            num_classes=len(DATA["classes"]),
        log:
            log_of("convert_sbd"),
        benchmark:
            benchmark_of("convert_sbd")
        shell:
            "python -m stages.convert_sbd --sbd {input:q} --num-classes {params.num_classes} --out {output:q} > {log:q} 2>&1"


# What the labels are derived from: the VOC folder, the SBD masks and the split lists kept outside it.
DATASET_PATHS = [VOC_ROOT, *([AUG_MASKS] if AUG_MASKS else []), *SPLIT_LISTS.values()]
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
    shell:
        "python -m stages.dataset_manifest --out {output:q} {input:q} > {log:q} 2>&1"


def image_labels_inputs(wildcards):
    inputs = {"root": VOC_ROOT, "manifest": MANIFEST, **{f"list_{split}": path for split, path in SPLIT_LISTS.items()}}
    return {**inputs, "aug_masks": AUG_MASKS} if AUG_MASKS else inputs


def image_labels_args(wildcards, input):
    args = [f"--list={split}={input[f'list_{split}']}" for split in SPLIT_LISTS]
    args += [f"--aug-masks={input.aug_masks}"] if AUG_MASKS else []
    args += [f"--unlabeled={','.join(TEST_SPLITS)}"] if TEST_SPLITS else []
    return " ".join(shlex.quote(a) for a in args)


rule image_labels:
    input:
        unpack(image_labels_inputs),
    output:
        labels=LABELS,
        splits=expand(f"{R}/labels/splits/{{split}}.txt", split=DATA["splits"] + TEST_SPLITS),
    params:
        classes=",".join(DATA["classes"]),
        splits=",".join(DATA["splits"]),
        optional=image_labels_args,
    log:
        log_of("image_labels"),
    benchmark:
        benchmark_of("image_labels")
    shell:
        "python -m stages.image_labels --root {input.root:q} --classes {params.classes:q} --splits {params.splits:q}"
        " {params.optional} --out {R}/labels > {log:q} 2>&1"
