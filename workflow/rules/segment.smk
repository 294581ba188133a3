# Using what the run learned, on request: segment a folder of new photos, export the trained DeepLabv3+.
#   snakemake --cores all segment --config segment_images=/path/to/photos
#   snakemake --cores all export_model
# Both use the DeepLabv3+ trained on the pseudo labels of segment_seed (the run's first seed unless set).
USED_SEED = config["segment_seed"] if config["segment_seed"] is not None else FIRST_SEED
TRAINED = f"{R}/seed_{USED_SEED}/segmentation/pseudo_labels/model.pt"


if config["segment_images"]:

    PHOTOS = config["segment_images"]

    rule segment:
        input:
            **({"classifier": f"{R}/seed_{USED_SEED}/classifier/{VARIANT}/model.pt"} if config["segment_cams"] else {}),
            photos=lambda wildcards: DATASET.photos(PHOTOS),
            model=TRAINED,
        output:
            folder=directory(f"{R}/segmented/{Path(PHOTOS).resolve().name}"),
        log:
            log_of("segment"),
        benchmark:
            benchmark_of("segment")
        conda:
            "../../envs/wsss.yaml"
        threads: JOB_THREADS
        resources:
            gpu=GPU,
        params:
            **stage(
                "segment",
                images=str(Path(PHOTOS).resolve()),
                cfg=config["predict_segmentation"],
                runtime=RUNTIME,
                max_side=DATA["max_side"],
                cams=config["cams"] if config["segment_cams"] else None,
            ),
        shell:
            STAGE


rule export_model:
    input:
        model=TRAINED,
    output:
        onnx=f"{R}/export/model.onnx",
        torchscript=f"{R}/export/model.ts",
        meta=f"{R}/export/model.json",
    log:
        log_of("export_model"),
    benchmark:
        benchmark_of("export_model")
    conda:
        "../../envs/wsss.yaml"
    params:
        **stage("export_model"),
    shell:
        STAGE
