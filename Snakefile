# Puzzle-CAM weakly-supervised semantic segmentation as a Snakemake DAG.
#   snakemake --cores all                                   # embedded synthetic dataset
#   snakemake --cores all --configfile config/voc2012.yaml  # PASCAL VOC 2012 (+SBD) on disk
from snakemake.utils import min_version

min_version("8.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/cams.smk"
include: "workflow/rules/affinity.smk"
include: "workflow/rules/pseudo_labels.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/report.smk"


if SHARDS > 1:  # with one shard the per-image stages write their folders themselves

    include: "workflow/rules/shards.smk"


# Jobs of seconds (listing files, tables, the report) run where Snakemake runs instead of queueing on a cluster
# (on one machine every job runs locally anyway).
localrules:
    all,
    dataset_manifest,
    image_labels,
    eval_pseudo_labels,
    eval_segmentation,
    summary,
    report,
    figures,
    ablation,


rule all:
    default_target: True
    input:
        expand(f"{R}/tables/miou.{{ext}}", ext=["md", "csv", "json"]),
        rules.figures.output,
        ABLATION if len(config["classifier"]["variants"]) > 1 and CAM_SCORED else [],
        SUBMISSION if TEST_SPLITS else [],
        UNSCORED_PREDICTIONS,
