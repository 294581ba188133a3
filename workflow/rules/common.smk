import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

import stages
from stages import StageError
from stages.config import check_config

# One line on the terminal for a bad config (sys.exit prints just the message), before any job runs.
try:
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except StageError as e:
    sys.exit(str(e))
validate(config, "../schemas/config.schema.yaml")  # fills in the schema's defaults

DATA = config["data"]

# The rules' `python` is the interpreter running Snakemake, not the first one on PATH (under --sdm conda, the
# rule's environment's), and it finds `stages` where this workflow imported it from (the installed package or
# this source tree), whatever the job's working directory or machine.
# (The prefix is formatted like a shell line: its literal braces are doubled.)
_STAGES = shlex.quote(str(Path(stages.__file__).resolve().parents[1]))
_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
_PYTHON = "" if _CONDA else f'python() {{{{ {shlex.quote(sys.executable)} "$@"; }}}}; '
shell.prefix(f"export PYTHONPATH={_STAGES}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; {_PYTHON}")


def data_path(path):
    """A dataset path of the config: relative ones are under data_root (`--config data_root=/path`) when set."""
    root = config.get("data_root")
    return str(Path(root) / path) if root and not Path(path).is_absolute() else path


# Fail at start-up, before any training, on a weights file that is not there.
for _section in ("classifier", "affinity", "segmentation"):
    _path = config[_section].get("pretrained_path")
    if _path and not Path(_path).is_file():
        sys.exit(f"config {_section}.pretrained_path: {_path} is not a file")

VOC_ROOT = data_path(DATA["root"])
# The mask-less split (VOC test): listed by image_labels, predicted and packed for the evaluation server.
TEST_SPLITS = [DATA["test_split"]] if "test_split" in DATA else []
# Split lists kept outside ImageSets/Segmentation (the train_aug list the user provides).
SPLIT_LISTS = {split: data_path(path) for split, path in DATA.get("lists", {}).items()}
# Where image-level labels come from, and the splits with masks: only these are scored.
LABEL_SOURCE = DATA.get("labels", "masks")
MASK_SPLITS = DATA.get("mask_splits", DATA["splits"] if LABEL_SOURCE == "masks" else [])
if not set(MASK_SPLITS) <= set(DATA["splits"]):
    sys.exit(f"config data.mask_splits: {sorted(set(MASK_SPLITS) - set(DATA['splits']))} not in data.splits")
if LABEL_SOURCE == "masks" and set(MASK_SPLITS) != set(DATA["splits"]):
    sys.exit("config data.mask_splits: with data.labels: masks every split of data.splits needs masks")
if LABEL_SOURCE == "tags" and "tags" not in DATA and "coco" not in DATA:
    sys.exit("config data.tags: data.labels is 'tags' but no tags file is given")
TAGS = data_path(DATA["tags"]) if "tags" in DATA else None
# SBD-converted masks: the user's SegmentationClassAug where it exists, else converted from SBD by convert_sbd.
SBD_MASKS = f"resources/{config['run']}/SegmentationClassAug"
AUG_MASKS = data_path(DATA["aug_masks"]) if "aug_masks" in DATA else None
if "sbd" in DATA and not (AUG_MASKS and Path(AUG_MASKS).is_dir()):
    AUG_MASKS = SBD_MASKS
# COCO: masks, tags and split lists converted from the instances files by convert_coco.
COCO_DIR = f"resources/{config['run']}/coco"
COCO_LISTS = {split: f"{COCO_DIR}/lists/{split}.txt" for split in DATA.get("coco", {})}
if "coco" in DATA:
    AUG_MASKS, TAGS = f"{COCO_DIR}/masks", f"{COCO_DIR}/tags.json"
    SPLIT_LISTS.update(COCO_LISTS)

# The resources.gpu of the GPU jobs: none where the config computes on the CPU.
GPU = 0 if config["device"] == "cpu" else 1
# Threads of a job that can use many; Snakemake lowers it to --cores where that is smaller.
JOB_THREADS = config["max_threads"]
# The pseudo-label chain is the critical path: it goes first, on every core (priority), so that the two DeepLabv3+
# trainings (pseudo labels, upper bound) and their predictions then run side by side, each on its share of the
# cores: two jobs on one core each finish sooner than the same two on both, one after the other.
CHAIN_PRIORITY = 1
# Every artifact of a run lives under results/<run>/: what does not depend on the seed (image labels, the
# dataset manifest) and the tables over all seeds there, what a seed changes under results/<run>/seed_<k>/.
R = f"results/{config['run']}"
S = f"{R}/seed_{{seed}}"
# `seeds` runs every seed-dependent stage once per seed; without it the run has the one `seed`.
SEEDS = config.get("seeds") or [config["seed"]]
# The seed whose examples, loss curves and test-set predictions the report and the submission show.
FIRST_SEED = SEEDS[0]
LABELS = f"{R}/labels/image_labels.json"
VARIANT = config["classifier"]["variant"]
# Training masks of DeepLabv3+: the pseudo labels, and the ground truth for the fully supervised upper bound.
SEG_MASKS = ["pseudo_labels"] + (
    ["ground_truth"] if config["segmentation"]["upper_bound"] and DATA["train_split"] in MASK_SPLITS else []
)
# The paper's Table 1, and the test-set archive for the PASCAL VOC evaluation server.
ABLATION = expand(f"{R}/tables/ablation.{{ext}}", ext=["md", "json"])
SUBMISSION = f"{R}/seed_{FIRST_SEED}/submission/{config['run']}_test.tar"
SEG_STAGE = {"pseudo_labels": "segmentation", "ground_truth": "upper_bound"}
# What a model depends on besides its stage's section (a change reruns it): training also on the job's seed,
# inference not (it depends on a seed only through its inputs); num_workers (--workers) changes only the
# speed of loading: it is a job's resource, not a param.
RUNTIME = {k: config[k] for k in ("device", "precision", "deterministic")}
INFERENCE_RUNTIME = json.dumps(RUNTIME, sort_keys=True)
WORKERS = config["num_workers"]


wildcard_constraints:
    variant="|".join(config["classifier"]["variants"]),
    masks="pseudo_labels|ground_truth",
    split="[A-Za-z0-9_]+",
    seed="[0-9]+",
    shard=r"\d+-of-\d+",


def section(name, without=()):
    """A config section as JSON: the stage's params, so that changing it reruns that stage and what follows.

    Keys in ``without`` choose which jobs run, not what one job computes, and stay out of its params.
    """
    return json.dumps({k: v for k, v in config[name].items() if k not in without}, sort_keys=True)


def folder_of(key):
    """The folder a stage writes into, from its output ``key``: derived from the outputs, it is no param of its own."""
    return lambda wildcards, output: str(Path(output[key]).parent)


def split_file(key):
    return f"{R}/labels/splits/{DATA[key]}.txt"


def log_of(rule, *wildcards, root=R):
    """The job's log; per-seed rules pass ``root=S`` so that each seed's logs sit in its own folder."""
    name = "_".join(f"{{{w}}}" for w in wildcards) or rule
    return f"{root}/logs/{rule}/{name}.log"


def benchmark_of(rule, *wildcards, root=R):
    name = "_".join(f"{{{w}}}" for w in wildcards) or rule
    return f"{root}/benchmarks/{rule}/{name}.tsv"


def seed_dir(wildcards):
    """results/<run>/seed_<k> of a per-seed job (input functions get no wildcard expansion of ``S``)."""
    return f"{R}/seed_{wildcards.seed}"


def training_runtime(wildcards):
    return json.dumps({**RUNTIME, "seed": int(wildcards.seed)}, sort_keys=True)


def seg_threads(wildcards):
    """Threads of a DeepLabv3+ job: its share of the cores beside the other training's jobs (see CHAIN_PRIORITY)."""
    try:
        cores = workflow.cores
    except WorkflowError:  # no --cores (a dry run, a cluster executor): each job has a machine of its own
        return JOB_THREADS
    return max(1, min(JOB_THREADS, cores // len(SEG_MASKS)))


# A per-image stage runs as `shards` jobs, one per contiguous part of its split (`--shard K-of-N`), each writing
# results/<run>/seed_<k>/shards/<folder>/<K-of-N>/, joined by rule gather_shards into .../<folder>. With one shard
# (the default) the job writes the folder itself: no gather jobs, no copies.
SHARDS = config["shards"]
SHARD_NAMES = [f"{k}-of-{SHARDS}" for k in range(1, SHARDS + 1)]
SHARD_WILDCARDS = ("shard",) if SHARDS > 1 else ()
SHARDED_FOLDERS = r"cams/[^/]+|affinity_labels|rw|pseudo_labels|predictions/[^/]+/[^/]+"


def sharded_output(folder):
    """The output of a per-image stage's job: ``folder`` (under the seed's folder), or one shard of it."""
    return directory(f"{S}/{folder}" if SHARDS == 1 else f"{S}/shards/{folder}/{{shard}}")


def shard_of(wildcards):
    return getattr(wildcards, "shard", "1-of-1")


def gathered_split(wildcards):
    """The split a gathered folder covers: cams/<variant> make_cams's, predictions/<masks>/<split> its own,
    the others the training split."""
    stage, *names = wildcards.folder.split("/")
    if stage == "cams":
        return make_cams_split(SimpleNamespace(variant=names[0]))
    return f"{R}/labels/splits/{names[-1]}.txt" if stage == "predictions" else split_file("train_split")


def shard_folders(wildcards):
    return expand(f"{seed_dir(wildcards)}/shards/{wildcards.folder}/{{shard}}", shard=SHARD_NAMES)


# Input and argument functions of the rules, in the order of the rule files.


def make_cams_split(wildcards):
    """The variant the later stages use needs CAMs on the training split; the other ablation variants only
    on the split they are scored on."""
    return split_file("train_split" if wildcards.variant == VARIANT else "cam_split")


def found_list(split, path):
    """The list the stage will read: the configured one, else ImageSets/Segmentation's; None where it derives it."""
    standard = Path(VOC_ROOT) / "ImageSets" / "Segmentation" / f"{split}.txt"
    return path if Path(path).is_file() or split in COCO_LISTS else (str(standard) if standard.is_file() else None)


def image_labels_inputs(wildcards):
    inputs = {"root": VOC_ROOT, "manifest": MANIFEST, **{f"list_{split}": path for split, path in FOUND_LISTS.items()}}
    inputs.update({"tags": TAGS} if TAGS else {})
    return {**inputs, "aug_masks": AUG_MASKS} if AUG_MASKS else inputs


def image_labels_args(wildcards, input):
    args = [f"--list={split}={path}" for split, path in SPLIT_LISTS.items()]
    args += [f"--aug-masks={input.aug_masks}"] if AUG_MASKS else []
    args += [f"--unlabeled={','.join(TEST_SPLITS)}"] if TEST_SPLITS else []
    args += [
        f"--source={LABEL_SOURCE}",
        f"--mask-splits={','.join(MASK_SPLITS)}",
        f"--train-splits={DATA['train_split']}",
    ]
    args += [f"--tags={input.tags}"] if TAGS else []
    args += [f"--sbd={data_path(DATA['sbd'])}"] if "sbd" in DATA else []
    args += [
        f"--image-dir={DATA.get('image_dir', 'JPEGImages')}",
        f"--mask-dir={DATA.get('mask_dir', 'SegmentationClass')}",
    ]
    args += [f"--max-side={DATA['max_side']}"] if DATA.get("max_side") else []
    return " ".join(shlex.quote(a) for a in args)


def report_args(wildcards, input):
    args = ["--cam-tables", *input.cams] if input.cams else []
    args += ["--mask-tables", *input.masks] if input.masks else []
    return " ".join(shlex.quote(a) for a in [*args, *(f"--left-out={note}" for note in LEFT_OUT)])


def history_args(wildcards, input):
    name_of = {path: name for name, path in HISTORIES.items()}
    return " ".join(shlex.quote(f"{name_of[path]}={path}") for path in input.histories)


def segmentation_masks(wildcards):
    return {"masks": f"{seed_dir(wildcards)}/pseudo_labels"} if wildcards.masks == "pseudo_labels" else {}


def segmentation_init(wildcards):
    if config["segmentation"]["init_from_classifier"]:
        return {"classifier": f"{seed_dir(wildcards)}/classifier/{VARIANT}/model.pt"}
    return {}


def seed_tables(*names):
    """The tables ``names`` (under seed_<k>/tables/) of every seed, as the SEED=PATH arguments of the stages
    that summarise the seeds."""
    return [f"{seed}={R}/seed_{seed}/tables/{name}" for seed in SEEDS for name in names]


def optional_args(wildcards, input):
    return " ".join(f"--{k} {input[k]}" for k in ("masks", "classifier") if k in input.keys())
