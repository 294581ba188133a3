# Puzzle-CAM weakly-supervised semantic segmentation as a Snakemake DAG.
#   snakemake --cores all                                   # the embedded generated dataset
#   snakemake --cores all --configfile config/voc2012.yaml  # PASCAL VOC 2012 (+SBD) on disk
from snakemake.utils import min_version

min_version("8.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/config.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/cams.smk"
include: "workflow/rules/thresholds.smk"
include: "workflow/rules/affinity.smk"
include: "workflow/rules/pseudo_labels.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/shards.smk"
include: "workflow/rules/segment.smk"


# Jobs of seconds (listing files, tables, the report) run where Snakemake runs instead of queueing on a cluster
# (on one machine every job runs locally anyway).
localrules:
    all,
    fingerprint,
    image_labels,
    eval_pseudo_labels,
    eval_segmentation,
    summary,
    report,
    figures,
    ablation,


# Every artifact of the run, not only the tables: a job that was interrupted after Snakemake removed its outputs
# (a changed setting, --forcerun) is run again with everything after it, instead of older tables being taken as
# current because nothing downstream is missing.
rule all:
    default_target: True
    input:
        PLANNED,


onsuccess:
    show_warnings(RUN_DIR, START)


onerror:
    show_warnings(RUN_DIR, START)
