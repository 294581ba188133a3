rule report:
    input:
        cams=expand(f"{R}/tables/cam_{{variant}}.json", variant=config["classifier"]["variants"]),
        masks=[f"{R}/tables/pseudo_labels.json"]
        + expand(f"{R}/tables/segmentation_{{masks}}_{DATA['eval_split']}.json", masks=SEG_MASKS),
    output:
        expand(f"{R}/tables/miou.{{ext}}", ext=["md", "csv", "json"]),
    log:
        log_of("report"),
    benchmark:
        benchmark_of("report")
    shell:
        "python -m stages.report --cam-tables {input.cams:q} --mask-tables {input.masks:q} --variant {VARIANT}"
        " --out {R}/tables > {log:q} 2>&1"
