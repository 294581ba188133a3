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


if "coco" in DATA:

    rule convert_coco:
        input:
            unpack(lambda wildcards: {split: data_path(path) for split, path in DATA["coco"].items()}),
        output:
            masks=directory(AUG_MASKS),
            tags=TAGS,
            lists=list(COCO_LISTS.values()),
        params:
            instances=lambda wildcards, input: " ".join(shlex.quote(f"--instances={s}={input[s]}") for s in DATA["coco"]),
            classes=",".join(DATA["classes"]),
        log:
            log_of("convert_coco"),
        benchmark:
            benchmark_of("convert_coco")
        shell:
            "python -m stages.convert_coco {params.instances} --classes {params.classes:q} --out {COCO_DIR} > {log:q} 2>&1"


def found_list(split, path):
    """The list the stage will read: the configured one, else ImageSets/Segmentation's; None where it derives it."""
    standard = Path(VOC_ROOT) / "ImageSets" / "Segmentation" / f"{split}.txt"
    return path if Path(path).is_file() or split in COCO_LISTS else (str(standard) if standard.is_file() else None)


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
    shell:
        "python -m stages.dataset_manifest --out {output:q} {input:q} > {log:q} 2>&1"


def image_labels_inputs(wildcards):
    inputs = {"root": VOC_ROOT, "manifest": MANIFEST, **{f"list_{split}": path for split, path in FOUND_LISTS.items()}}
    inputs.update({"tags": TAGS} if TAGS else {})
    return {**inputs, "aug_masks": AUG_MASKS} if AUG_MASKS else inputs


def image_labels_args(wildcards, input):
    args = [f"--list={split}={path}" for split, path in SPLIT_LISTS.items()]
    args += [f"--aug-masks={input.aug_masks}"] if AUG_MASKS else []
    args += [f"--unlabeled={','.join(TEST_SPLITS)}"] if TEST_SPLITS else []
    args += [f"--source={LABEL_SOURCE}", f"--mask-splits={','.join(MASK_SPLITS)}", f"--train-splits={DATA['train_split']}"]
    args += [f"--tags={input.tags}"] if TAGS else []
    args += [f"--sbd={data_path(DATA['sbd'])}"] if "sbd" in DATA else []
    args += [f"--image-dir={DATA.get('image_dir', 'JPEGImages')}", f"--mask-dir={DATA.get('mask_dir', 'SegmentationClass')}"]
    args += [f"--max-side={DATA['max_side']}"] if DATA.get("max_side") else []
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
