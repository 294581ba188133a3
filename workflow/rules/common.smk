import json

from snakemake.utils import validate


validate(config, "../schemas/config.schema.yaml")

DATA = config["data"]
for _key in ("train_split", "cam_split", "eval_split"):
    if DATA[_key] not in DATA["splits"]:
        raise ValueError(f"config data.{_key}: {DATA[_key]!r} is not one of data.splits {DATA['splits']}")
if config["classifier"]["variant"] not in config["classifier"]["variants"]:
    raise ValueError(
        f"config classifier.variant: {config['classifier']['variant']!r} is not one of classifier.variants"
    )

# Every artifact of a run lives under results/<run>/.
R = f"results/{config['run']}"
LABELS = f"{R}/labels/image_labels.json"
VARIANT = config["classifier"]["variant"]
# Training masks of DeepLabv3+: the pseudo labels, and the ground truth for the fully supervised upper bound.
SEG_MASKS = ["pseudo_labels"] + (["ground_truth"] if config["segmentation"]["upper_bound"] else [])
SEG_STAGE = {"pseudo_labels": "segmentation", "ground_truth": "upper_bound"}
# What every stage's computation depends on besides its own section (a change reruns it).
RUNTIME = json.dumps({k: config[k] for k in ("device", "seed", "num_workers")}, sort_keys=True)


wildcard_constraints:
    variant="|".join(config["classifier"]["variants"]),
    masks="pseudo_labels|ground_truth",
    split="[A-Za-z0-9_]+",


def section(name):
    """A config section as JSON: the stage's params, so that changing it reruns that stage and what follows."""
    return json.dumps(config[name], sort_keys=True)


def split_file(key):
    return f"{R}/labels/splits/{DATA[key]}.txt"


def log_of(rule, *wildcards):
    name = "_".join(["{" + w + "}" for w in wildcards]) or rule
    return f"{R}/logs/{rule}/{name}.log"


def benchmark_of(rule, *wildcards):
    name = "_".join(["{" + w + "}" for w in wildcards]) or rule
    return f"{R}/benchmarks/{rule}/{name}.tsv"
