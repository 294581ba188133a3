"""The config check at start-up, in one pass: the JSON schema, then the constraints between keys.

Every problem is one line naming the key (and the key it conflicts with), and every problem of a config is
reported at once. Integers must be written as integers (``2.0`` for ``epochs`` is refused: a float there would
fail later in a ``range``), and numbers in exponent form are numbers: YAML 1.1, which PyYAML reads, takes
``1e-3`` (no dot) for a string. The schema holds every default; :func:`check_config` fills them in.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path, PurePosixPath

import jsonschema
import yaml

from stages.data.photos import results_name

# Numbers that come as text: YAML 1.1 resolves floats only with a dot (1e-3 and 5E4 come back as strings), and
# Snakemake's --config hands the values inside a mapping over as strings (`random_walk={beta: 30}` gives '30').
INTEGER = re.compile(r"^[-+]?\d+$")
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

_STRICT = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, x: isinstance(x, int) and not isinstance(x, bool)),
)


class ConfigError(Exception):
    """Every problem of a config, one line each."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def load_yaml(path) -> dict:
    """A YAML config file; a syntax error names the file, line and column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot be read ({e.strerror})"]) from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}"]) from None
    if not isinstance(config, dict):
        raise ConfigError([f"{path}: a config file holds keys at its top level"])
    return config


def key_name(path) -> str:
    """How an error names a key: ``config classifier.epochs``, or ``config`` for the top level."""
    return " ".join(["config", ".".join(str(p) for p in path)]).strip()


def _get(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is missing")
    if error.validator == "type" and "integer" in str(error.validator_value) and isinstance(error.instance, float):
        return f"{error.instance!r} is not an integer (write {int(error.instance)})" if error.instance.is_integer() \
            else f"{error.instance!r} is not an integer"
    if error.validator == "pattern" and "description" in error.schema:
        return f"{error.instance!r}: {error.schema['description']}"
    return error.message


def coerce_scalars(config: dict, schema: dict) -> None:
    """Turn strings like ``1e-3`` into floats where the schema asks for a number, digit strings into integers
    where it asks for one (``--config seeds=[0,1,2]`` hands Snakemake's list items over as strings), and YAML's
    ``true`` and ``false`` into booleans where it asks for one (Snakemake's ``--config`` reads only ``True`` and
    ``False`` as booleans)."""
    for error in _STRICT(schema).iter_errors(config):
        expected = error.validator_value if error.validator == "type" else None
        expected = expected if isinstance(expected, list) else [expected]
        if not isinstance(error.instance, str):
            continue
        text = error.instance.strip()
        if ("integer" in expected or "number" in expected) and INTEGER.match(text):
            value = int(text)
        elif ("number" in expected or "integer" in expected) and NUMBER.match(text):
            value = float(text)  # where an integer is asked for, the check then says which integer to write
        elif "boolean" in expected and text in ("true", "false"):
            value = text == "true"
        else:
            continue
        *parents, last = error.absolute_path
        target = config
        for p in parents:
            target = target[p]
        target[last] = value


def schema_errors(config: dict, schema: dict) -> list[str]:
    errors = sorted(_STRICT(schema).iter_errors(config), key=lambda e: (key_name(e.absolute_path), e.message))
    return list(dict.fromkeys(f"{key_name(e.absolute_path)}: {_message(e)}" for e in errors))


def _local(schema: dict, sub: dict) -> dict:
    """``sub`` with a local ``$ref`` (``#/$defs/...``) followed, so that the default it points at is seen."""
    ref = sub.get("$ref", "")
    if not ref.startswith("#/"):
        return sub
    target = schema
    for part in ref[2:].split("/"):
        target = target[part]
    return {**_local(schema, target), **{k: v for k, v in sub.items() if k != "$ref"}}


def fill_defaults(config: dict, schema: dict) -> dict:
    """Every key the schema gives a default for, where ``config`` has none (at every level that exists)."""

    def set_defaults(validator, properties, instance, sub_schema):
        for name, sub in properties.items():
            sub = _local(schema, sub) if isinstance(sub, dict) else sub
            if isinstance(instance, dict) and isinstance(sub, dict) and "default" in sub:
                instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, sub_schema)

    for _ in jsonschema.validators.extend(_STRICT, {"properties": set_defaults})(schema).iter_errors(config):
        pass
    return config


# -- constraints between keys: each names the keys; None where it holds or cannot be judged (a schema error) -----

def _ordered(low: str, high: str, strict: bool = False):
    """The value at ``low`` must not exceed (``strict``: must be below) the one at ``high``."""

    def check(config):
        a, b = _get(config, low), _get(config, high)
        if a > b or (strict and a == b):
            return f"config {low} ({a}) must be {'below' if strict else 'at most'} {high} ({b})"
        return None

    return check


def _pair_ordered(key: str):
    """A [low, high] range: low must not exceed high."""

    def check(config):
        low, high = _get(config, key)
        return f"config {key}: {[low, high]} has its low end above its high end (write [{high}, {low}])" if low > high else None

    return check


def _member(key: str, of: str, inside: bool = True):
    """The value at ``key`` must be (``inside``), or must not be, one of the list at ``of``."""

    def check(config):
        value, listed = _get(config, key), _get(config, of)
        if (value in listed) == inside:
            return None
        if inside:
            return f"config {key} ({value!r}) is not one of {of} {listed}"
        return f"config {key} ({value!r}) is one of {of} {listed}: it must name a split without masks"

    return check


def _mask_splits(config):
    data = config["data"]
    if "mask_splits" not in data:
        return None
    if extra := sorted(set(data["mask_splits"]) - set(data["splits"])):
        return f"config data.mask_splits: {extra} not in data.splits"
    if data["labels"] == "masks" and set(data["mask_splits"]) != set(data["splits"]):
        return "config data.mask_splits: with data.labels: masks every split of data.splits needs masks"
    return None


def mask_splits(data: dict) -> list[str]:
    """The splits with masks: data.mask_splits, by default every split where the labels come from the masks."""
    return list(data.get("mask_splits", data["splits"] if data.get("labels", "masks") == "masks" else []))


def threshold_split(config: dict) -> str | None:
    """The split ``thresholds: masks`` chooses from: choose_thresholds.split, by default the training split where it
    has masks, else the first split with masks (None: there is none)."""
    named, splits = config["choose_thresholds"].get("split"), mask_splits(config["data"])
    if named is not None:
        return named
    return config["data"]["train_split"] if config["data"]["train_split"] in splits else next(iter(splits), None)


def _threshold_split(config):
    if config.get("thresholds") != "masks":
        return None
    split, splits = threshold_split(config), mask_splits(config["data"])
    if split is None:
        return "config thresholds: masks: no split has masks (data.mask_splits is empty); use thresholds: auto or given"
    if split not in splits:
        return (f"config choose_thresholds.split: split {split!r} has no masks (data.mask_splits: {splits}); "
                "thresholds: masks needs one that has")
    return None


def _tags_given(config):
    data = config["data"]
    if data["labels"] == "tags" and "tags" not in data and "coco" not in data:
        return "config data.tags: data.labels is 'tags' but no tags file is given"
    return None


def _weights_file(section: str):
    def check(config):
        path = config[section].get("pretrained_path")
        if path and not Path(path).is_file():
            return f"config {section}.pretrained_path: {path} is not a file"
        return None

    return check


def inside(path: str, folder: str) -> bool:
    """Whether a relative ``path`` stays inside ``folder`` (no absolute path, no ``..`` climbing out)."""
    p = PurePosixPath(path)
    return not p.is_absolute() and ".." not in p.parts and p.parts[:1] == (folder,) and len(p.parts) > 1


def _generated_root(config):
    """make_dataset replaces data.root: it must be a folder of resources/, never the user's data."""
    data = config["data"]
    if "generate" in data and (config.get("data_root") or not inside(data["root"], "resources")):
        return (f"config data.root: {data['root']!r} is written by data.generate, so it must be a folder under "
                "resources/ (and data_root unset): a generated dataset never replaces other files")
    return None


def _segment_images(config):
    """Rule segment writes results/<run>/segmented/<the folder's name>-<digest of its place>: a folder with a name
    of its own, which neither holds the results nor lies inside them (it would read its own results as photos)."""
    folder = config.get("segment_images")
    if folder is None:
        return None
    where = Path(folder).resolve()
    if not where.is_dir():
        return f"config segment_images: {folder} is not a folder of photos"
    if not where.name or where.name.startswith("."):
        return f"config segment_images: {folder} has no name to write results/<run>/segmented/<name> under"
    out = Path("results", config["run"], "segmented", results_name(where)).resolve()
    if out.is_relative_to(where) or where.is_relative_to(out.parent):
        return (f"config segment_images: {folder} holds the run's results (results/{config['run']}/segmented), "
                "which would be read as photos; give a folder of photos only")
    return None


def _segment_seed(config):
    seed, seeds = config.get("segment_seed"), config.get("seeds") or [config["seed"]]
    if seed is not None and seed not in seeds:
        return f"config segment_seed ({seed}) is not one of the run's seeds {seeds}"
    return None


# The constraints between keys that the schema cannot state; each names both keys.
CONSTRAINTS = [
    _member("data.train_split", "data.splits"),
    _member("data.cam_split", "data.splits"),
    _member("data.eval_split", "data.splits"),
    _member("data.test_split", "data.splits", inside=False),
    _member("classifier.variant", "classifier.variants"),
    _mask_splits,
    _threshold_split,
    _ordered("choose_thresholds.candidates.start", "choose_thresholds.candidates.stop"),
    _tags_given,
    _generated_root,
    _pair_ordered("data.generate.object_scale"),
    _pair_ordered("data.generate.body_saturation"),
    _pair_ordered("data.generate.part_scale"),
    _pair_ordered("classifier.resize_long"),
    _pair_ordered("affinity.resize_long"),
    _pair_ordered("segmentation.resize_long"),
    _ordered("eval_cams.thresholds.start", "eval_cams.thresholds.stop"),
    _ordered("affinity_labels.bg_threshold", "affinity_labels.fg_threshold", strict=True),
    *(_weights_file(section) for section in ("classifier", "affinity", "segmentation")),
    _segment_images,
    _segment_seed,
]


def constraint_errors(config: dict) -> list[str]:
    errors = []
    for constraint in CONSTRAINTS:
        try:
            problem = constraint(config)
        except (KeyError, TypeError, ValueError):  # a key missing or of the wrong type: the schema names it
            continue
        if problem:
            errors.append(problem)
    return errors


def check_config(config: dict, schema_path) -> dict:
    """Coerce exponent-form numbers (and the other scalars the command line hands over as strings), check the
    schema and every constraint, fill in the defaults; return the config. Every problem at once: :class:`ConfigError` holds one line per problem."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    coerce_scalars(config, schema)
    errors = schema_errors(config, schema)
    fill_defaults(config, schema)
    errors += constraint_errors(config)
    if errors:
        raise ConfigError(errors)
    return config


# the workflow's schema, and the config a run reads where --configfile names none
SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = "config/config.yaml"


def merge(base: dict, extra: dict) -> dict:
    """``extra`` merged into ``base`` in place, mappings key by key, as Snakemake merges its config files and --config."""
    for k, v in extra.items():
        base[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def merged(paths) -> dict:
    """The config files merged in order, as Snakemake merges the files of --configfile."""
    config: dict = {}
    for path in paths:
        merge(config, load_yaml(path))
    return config


def run_config(args=()) -> dict:
    """The config of the run ``snakemake ARGS`` would run, checked, with the schema's defaults: the files of its
    --configfile merged in order (config/config.yaml without one), then its --config values, each read as Snakemake
    reads it. The one way a reader outside the workflow (the Makefile, bench/) sees a run's config."""
    from snakemake.cli import get_argument_parser, parse_config  # seconds of import: only this function needs it

    parsed, _ = get_argument_parser().parse_known_args([str(a) for a in args])
    config = merge(merged(parsed.configfile or [DEFAULT_CONFIG]), parse_config(parsed.config))
    return check_config(config, SCHEMA)


def main(argv=None) -> None:
    """``python -m pipeline.config FILE...`` (workflow/rules on the path): the files' YAML checked (a mistake named with
    its file and line, exit 2), before Snakemake reads them. ``python -m pipeline.config --run-name SNAKEMAKE_ARGS``:
    the run that ``snakemake SNAKEMAKE_ARGS`` runs (its config files and --config overrides)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["--run-name"]:
            print(run_config(argv[1:])["run"])
        else:
            merged(argv)
    except ConfigError as e:
        print(e, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
