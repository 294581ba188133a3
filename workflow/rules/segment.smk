# Using what the run learned, on request: segment a folder of new photos, export the trained DeepLabv3+.
#   snakemake --cores all segment --config segment_images=/path/to/photos
#   snakemake --cores all export_model
# Both use the DeepLabv3+ trained on the pseudo labels of segment_seed (the run's first seed unless set).
USED_SEED = config["segment_seed"] if config["segment_seed"] is not None else FIRST_SEED
TRAINED = f"{RUN_DIR}/seed_{USED_SEED}/segmentation/pseudo_labels/model.pt"


if config["segment_images"]:

    PHOTOS = config["segment_images"]
    SEGMENTED = f"{RUN_DIR}/segmented/{results_name(PHOTOS)}"

    rule segment:
        input:
            **(
                {"classifier": f"{RUN_DIR}/seed_{USED_SEED}/classifier/{VARIANT}/model.pt"}
                if config["segment_cams"]
                else {}
            ),
            photos=lambda wildcards: DATASET.photos(PHOTOS, str(cache_of(SEGMENTED))),
            model=TRAINED,
        output:
            folder=directory(SEGMENTED),
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
            LAUNCH


rule export_model:
    input:
        model=TRAINED,
    output:
        onnx=f"{RUN_DIR}/export/model.onnx",
        torchscript=f"{RUN_DIR}/export/model.ts",
        meta=f"{RUN_DIR}/export/model.json",
    log:
        log_of("export_model"),
    benchmark:
        benchmark_of("export_model")
    conda:
        "../../envs/wsss.yaml"
    params:
        **stage("export_model"),
    shell:
        LAUNCH
