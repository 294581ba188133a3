import shlex


rule report:
    input:
        cams=expand(f"{R}/tables/cam_{{variant}}.json", variant=config["classifier"]["variants"]),
        masks=[f"{R}/tables/pseudo_labels.json"]
        + expand(f"{R}/tables/segmentation_{{masks}}_{{split}}.json", masks=SEG_MASKS, split=DATA["eval_split"])
        + [f"{R}/tables/segmentation_pseudo_labels_{DATA['cam_split']}.json"],
        labels=LABELS,
        split=split_file("train_split"),
    output:
        md=report(f"{R}/tables/miou.md", category="Tables", caption="../report/miou.rst"),
        csv=report(f"{R}/tables/miou.csv", category="Tables", caption="../report/miou.rst"),
        json=f"{R}/tables/miou.json",
    log:
        log_of("report"),
    benchmark:
        benchmark_of("report")
    shell:
        "python -m stages.report --cam-tables {input.cams:q} --mask-tables {input.masks:q} --variant {VARIANT}"
        " --labels {input.labels:q} --split-file {input.split:q} --out {R}/tables > {log:q} 2>&1"


HISTORY_NAMES = [f"classifier ({v})" for v in config["classifier"]["variants"]] + ["AffinityNet"] + [
    f"DeepLabv3+ ({m})" for m in SEG_MASKS
]


def history_args(wildcards, input):
    return " ".join(shlex.quote(f"{name}={path}") for name, path in zip(HISTORY_NAMES, input.histories))


rule figures:
    input:
        miou=f"{R}/tables/miou.json",
        histories=expand(f"{R}/classifier/{{variant}}/history.csv", variant=config["classifier"]["variants"])
        + [f"{R}/affinity/history.csv"]
        + expand(f"{R}/segmentation/{{masks}}/history.csv", masks=SEG_MASKS),
        labels=LABELS,
        split=split_file("cam_split"),
        cams=f"{R}/cams/{VARIANT}",
        rw=f"{R}/rw",
        pseudo_labels=f"{R}/pseudo_labels",
        predictions=f"{R}/predictions/pseudo_labels/{DATA['cam_split']}",
    output:
        bars=report(f"{R}/figures/miou_per_class.png", category="Figures", caption="../report/miou_per_class.rst"),
        losses=report(f"{R}/figures/loss_curves.png", category="Figures", caption="../report/loss_curves.rst"),
        examples=report(f"{R}/figures/examples.png", category="Figures", caption="../report/examples.rst"),
    params:
        histories=history_args,
    log:
        log_of("figures"),
    benchmark:
        benchmark_of("figures")
    shell:
        "python -m stages.figures --miou {input.miou:q} --histories {params.histories} --labels {input.labels:q}"
        " --split-file {input.split:q} --cams {input.cams:q} --rw {input.rw:q} --pseudo-labels {input.pseudo_labels:q}"
        " --predictions {input.predictions:q} --out {R}/figures > {log:q} 2>&1"


rule ablation:
    input:
        expand(f"{R}/tables/cam_{{variant}}.json", variant=config["classifier"]["variants"]),
    output:
        ABLATION,
    log:
        log_of("ablation"),
    benchmark:
        benchmark_of("ablation")
    shell:
        "python -m stages.ablation --cam-tables {input:q} --out {R}/tables > {log:q} 2>&1"
