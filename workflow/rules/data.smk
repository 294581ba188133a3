if "generate" in DATA:

    rule make_dataset:
        output:
            directory(DATA["root"]),
        params:
            cfg=json.dumps(DATA["generate"], sort_keys=True),
            runtime=RUNTIME,
            classes=",".join(DATA["classes"]),
        log:
            log_of("make_dataset"),
        benchmark:
            benchmark_of("make_dataset")
        shell:
            "python -m stages.make_dataset --cfg {params.cfg:q} --runtime {params.runtime:q}"
            " --classes {params.classes:q} --out {output:q} > {log:q} 2>&1"


rule image_labels:
    input:
        DATA["root"],
    output:
        labels=LABELS,
        splits=expand(f"{R}/labels/splits/{{split}}.txt", split=DATA["splits"]),
    params:
        classes=",".join(DATA["classes"]),
        splits=",".join(DATA["splits"]),
    log:
        log_of("image_labels"),
    benchmark:
        benchmark_of("image_labels")
    shell:
        "python -m stages.image_labels --root {input:q} --classes {params.classes:q} --splits {params.splits:q}"
        " --out {R}/labels > {log:q} 2>&1"
