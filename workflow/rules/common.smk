import itertools
import shlex
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

from pipeline.binding import LAUNCH, stage
from pipeline.config import threshold_split
from pipeline.dataset import DatasetPlan
from pipeline.run_end import show_warnings
import stages
from stages.data.layout import DatasetLayout
from stages.data.photos import cache_of, results_name

# The rules' `python` is the interpreter running Snakemake, not the first one on PATH (under --sdm conda, the
# rule's environment's), and it finds `stages` where this workflow imported it from (the installed package or
# this source tree), whatever the job's working directory or machine.
# (The prefix is formatted like a shell line: its literal braces are doubled.)
_STAGES = shlex.quote(str(Path(stages.__file__).resolve().parents[1]))
_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
_PYTHON = "" if _CONDA else f'python() {{{{ {shlex.quote(sys.executable)} "$@"; }}}}; '
shell.prefix(f"export PYTHONPATH={_STAGES}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; {_PYTHON}")

# When this run started: the end-of-run summary shows the warnings of the jobs it ran.
START = time.time()

DATA = config["data"]
# Every artifact of a run lives under results/<run>/: what does not depend on the seed (image labels) and the
# tables over all seeds there, what a seed changes under results/<run>/seed_<k>/.
RUN_DIR = f"results/{config['run']}"
SEED_DIR = f"{RUN_DIR}/seed_{{seed}}"
# The dataset's one owner: where its files are, for the rules' inputs here and for the stages' reading.
LAYOUT = DatasetLayout.from_config(DATA, config.get("data_root"), config["run"])
LABELS = f"{RUN_DIR}/labels/image_labels.json"
DATASET = DatasetPlan(LAYOUT, LABELS, f"{RUN_DIR}/labels/fingerprints")
# The mask-less split (VOC test): listed by image_labels, predicted and packed for the evaluation server.
TEST_SPLITS = list(LAYOUT.unlabeled)
MASK_SPLITS = list(LAYOUT.mask_splits)
# `seeds` runs every seed-dependent stage once per seed; without it the run has the one `seed`.
SEEDS = config.get("seeds") or [config["seed"]]
# The seed whose examples, loss curves and test-set predictions the report and the submission show.
FIRST_SEED = SEEDS[0]
VARIANTS = config["classifier"]["variants"]
VARIANT = config["classifier"]["variant"]
# Training masks of DeepLabv3+: the pseudo labels, and the ground truth for the fully supervised upper bound.
SEG_MASKS = ["pseudo_labels"] + (
    ["ground_truth"] if config["segmentation"]["upper_bound"] and DATA["train_split"] in MASK_SPLITS else []
)
# Only splits with masks are scored.
CAM_SCORED = DATA["cam_split"] in MASK_SPLITS
EVAL_SCORED = DATA["eval_split"] in MASK_SPLITS

# The resources.gpu of the GPU jobs: none where the config computes on the CPU.
GPU = 0 if config["device"] == "cpu" else 1
# Threads of a job that can use many; Snakemake lowers it to --cores where that is smaller.
JOB_THREADS = config["max_threads"]
# The pseudo-label chain is the critical path: it goes first, on every core (priority), so that the two DeepLabv3+
# trainings (pseudo labels, upper bound) and their predictions then run side by side, each on its share of the
# cores: two jobs on one core each finish sooner than the same two on both, one after the other.
CHAIN_PRIORITY = 1
# num_workers changes only the speed of loading: a job's resource, not a setting that reruns it.
WORKERS = config["num_workers"]
# What a model depends on besides its stage's section: training also on the job's seed, inference not (it
# depends on a seed only through its inputs).
RUNTIME = {k: config[k] for k in ("device", "precision", "deterministic")}


def training_runtime(wildcards):
    return {**RUNTIME, "seed": int(wildcards.seed)}


def section(name, without=()):
    """A config section without the keys that choose which jobs run (not what one job computes)."""
    return {k: v for k, v in config[name].items() if k not in without}


wildcard_constraints:
    variant="|".join(VARIANTS),
    masks="pseudo_labels|ground_truth",
    split="[A-Za-z0-9_]+",
    seed="|".join(map(str, SEEDS)),
    shard=r"\d+-of-\d+",


def split_list(split):
    """The ids of ``split``, as image_labels lists them."""
    return f"{RUN_DIR}/labels/splits/{split}.txt"


def dataset_files(split, aspect):
    """The input of a rule that reads the images or masks (``aspect``) of ``split`` itself, a file named after
    their fingerprint, so that the rule reruns when they change (workflow/rules/pipeline/dataset.py)."""
    return lambda wildcards: DATASET.files(split(wildcards) if callable(split) else split, aspect)


def log_of(rule, *wildcards, root=RUN_DIR):
    """The job's log; per-seed rules pass ``root=SEED_DIR`` so that each seed's logs sit in its own folder."""
    name = "_".join(f"{{{w}}}" for w in wildcards) or rule
    return f"{root}/logs/{rule}/{name}.log"


def benchmark_of(rule, *wildcards, root=RUN_DIR):
    name = "_".join(f"{{{w}}}" for w in wildcards) or rule
    return f"{root}/benchmarks/{rule}/{name}.tsv"


def seed_dir(wildcards):
    """results/<run>/seed_<k> of a per-seed job (input functions get no wildcard expansion of ``SEED_DIR``)."""
    return f"{RUN_DIR}/seed_{wildcards.seed}"


def seg_threads(wildcards):
    """Threads of a DeepLabv3+ job: its share of the cores beside the other training's jobs (see CHAIN_PRIORITY)."""
    try:
        cores = workflow.cores
    except WorkflowError:  # no --cores (a dry run, a cluster executor): each job has a machine of its own
        return JOB_THREADS
    return max(1, min(JOB_THREADS, cores // len(SEG_MASKS)))


# A per-image stage runs as `shards` jobs, one per contiguous part of its split (wildcard `shard`, K-of-N), each
# writing results/<run>/seed_<k>/shards/<folder>/<K-of-N>/, joined by rule gather_shards into .../<folder>. With
# one shard (the default) the job writes the folder itself: no gather jobs, no copies.
SHARDS = config["shards"]
SHARD_NAMES = [f"{k}-of-{SHARDS}" for k in range(1, SHARDS + 1)]
SHARD_WILDCARDS = ("shard",) if SHARDS > 1 else ()


def sharded_output(folder):
    """The output of a per-image stage's job: ``folder`` (under the seed's folder), or one shard of it."""
    return directory(f"{SEED_DIR}/{folder}" if SHARDS == 1 else f"{SEED_DIR}/shards/{folder}/{{shard}}")


def unsharded(shard_pattern):
    """The folder gather_shards joins a sharded output's shards into: ``sharded_output``'s path without its shards."""
    return str(Path(shard_pattern.replace(f"{SEED_DIR}/shards", SEED_DIR)).parent)


# The jobs of the run: every rule file adds the outputs and logs of the jobs it plans (`plan`), rule all asks for
# every output, and the summary reads every log's warnings.
PLANNED, PLANNED_LOGS = [], []


def combinations(**values):
    """Every combination of the wildcard values, as dicts: combinations(seed=[0, 1], variant=["puzzle"])."""
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


# `until: cams` plans the dataset, the classifiers and their CAMs' scores only (the ablation's run); the rules after
# them stay defined for a target named on the command line.
UNTIL_CAMS = {
    "make_dataset",
    "convert_sbd",
    "convert_coco",
    "image_labels",
    "train_classifier",
    "make_cams",
    "eval_cams",
    "ablation",
}


def plan(rule, jobs):
    """Add the outputs and logs of ``rule``'s jobs, one dict of wildcard values each; a sharded rule's jobs get
    every shard, and the folder gather_shards joins them into. Under ``until: cams``, only the rules of UNTIL_CAMS."""
    if config["until"] == "cams" and rule.rule.name not in UNTIL_CAMS:
        return
    sharded = SHARDS > 1 and "{shard}" in rule.output[0]
    for wildcards in jobs:
        for shard in SHARD_NAMES if sharded else [None]:
            values = {**wildcards, **({"shard": shard} if shard else {})}
            PLANNED.extend(expand(list(rule.output), **values))
            PLANNED_LOGS.extend(expand(list(rule.log), **values))
        if sharded:
            folder = expand(unsharded(rule.output[0]), **wildcards)[0]
            PLANNED.append(folder)
            seed_folder = expand(SEED_DIR, seed=wildcards["seed"])[0]
            PLANNED_LOGS.append(f"{seed_folder}/logs/gather_shards/{folder.removeprefix(f'{seed_folder}/')}.log")


# Input functions of the stage rules (here, so that each rule file holds rules only)

# thresholds: auto or masks: rules choose_*_thresholds choose them; given: the config's sections hold them.
CHOSEN = config["thresholds"] != "given"
THRESHOLD_SPLIT = threshold_split(config)
# the values the tables name where the thresholds are given
GIVEN_THRESHOLDS = {
    **{k: config["affinity_labels"][k] for k in ("fg_threshold", "bg_threshold")},
    "beta": config["random_walk"]["beta"],
    "threshold": config["pseudo_labels"]["threshold"],
}


def choose_settings(point):
    """What choose_<point>_thresholds computes from (its settings): the keys of choose_thresholds that change its choice under
    the run's ``thresholds`` (the criterion its point's), so that a key of the other point or mode reruns nothing."""
    cfg = config["choose_thresholds"]
    keys = ["candidates", "min_images", "confident" if point == "affinity_labels" else "betas"]
    if config["thresholds"] == "masks":
        return {**{k: cfg[k] for k in keys + ["mask_images"]}, "split": THRESHOLD_SPLIT}
    criterion = cfg["criterion"][point]
    keys += ["sample"] + (["tolerance", "min_rise"] if criterion == "deletion" else [])
    return {**{k: cfg[k] for k in keys}, "criterion": criterion}


def chosen_thresholds(point):
    """The thresholds file a stage reads (``point``: affinity_labels or pseudo_labels), none where they are given."""
    return [f"{SEED_DIR}/thresholds/{point}.json"] if CHOSEN else []


def threshold_inputs(wildcards):
    """The images and masks ``thresholds: masks`` chooses from (their fingerprints and list); none for auto."""
    if config["thresholds"] != "masks":
        return {}
    return {
        "mask_split": split_list(THRESHOLD_SPLIT),
        "mask_images": DATASET.files(THRESHOLD_SPLIT, "images"),
        "masks": DATASET.files(THRESHOLD_SPLIT, "masks"),
    }


def cams_split(wildcards):
    """The variant the later stages use needs CAMs on the training split; the other ablation variants only on
    the split they are scored on."""
    return DATA["train_split"] if wildcards.variant == VARIANT else DATA["cam_split"]


def segmentation_inputs(wildcards):
    """The training masks: the pseudo labels' folder, or for the upper bound the ground truth (read through the
    index: the masks' fingerprint); and, where the encoder starts from it, the classifier."""
    if wildcards.masks == "pseudo_labels":
        inputs = {"masks": f"{seed_dir(wildcards)}/pseudo_labels"}
    else:
        inputs = {"ground_truth": DATASET.files(DATA["train_split"], "masks")}
    if config["segmentation"]["init_from_classifier"]:
        inputs["classifier"] = f"{seed_dir(wildcards)}/classifier/{VARIANT}/model.pt"
    return inputs


def gathered_split(wildcards):
    """The split a gathered folder covers: cams/<variant> make_cams's, predictions/<masks>/<split> its own, the
    others the training split."""
    stage, *names = wildcards.folder.split("/")
    if stage == "cams":
        split = cams_split(SimpleNamespace(variant=names[0]))
    else:
        split = names[-1] if stage == "predictions" else DATA["train_split"]
    return f"{RUN_DIR}/labels/splits/{split}.txt"
