"""The workflow's config check at start-up: the JSON schema, then the constraints between keys.

Every problem is one line naming the key (and the other key it conflicts with). Integers must be
written as integers (``2.0`` for ``epochs`` is refused: a float there would fail later in a
``range``), and numbers in exponent form are numbers: YAML 1.1, which PyYAML reads, takes
``1e-3`` (no dot) for a string.
"""
from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import yaml

from stages import StageError

# YAML 1.1 resolves floats only with a dot: 1e-3 and 5E4 come back as strings.
EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")

_STRICT = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, x: isinstance(x, int) and not isinstance(x, bool)),
)


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
        if "integer" in expected and text.isdigit():
            value = int(text)
        elif "number" in expected and EXPONENT.match(text):
            value = float(text)
        elif "boolean" in expected and text in ("true", "false"):
            value = text == "true"
        else:
            continue
        *parents, last = error.absolute_path
        target = config
        for p in parents:
            target = target[p]
        target[last] = value


def check_schema(config: dict, schema: dict) -> None:
    errors = list(_STRICT(schema).iter_errors(config))
    if errors:
        e = min(errors, key=lambda e: (len(e.absolute_path), key_name(e.absolute_path)))
        raise StageError(f"{key_name(e.absolute_path)}: {_message(e)}")


def _ordered(low: str, high: str, strict: bool = False):
    """The value at ``low`` must not exceed (``strict``: must be below) the one at ``high``."""

    def check(config):
        try:
            a, b = _get(config, low), _get(config, high)
        except KeyError:
            return None
        if a > b or (strict and a == b):
            return f"config {low} ({a}) must be {'below' if strict else 'at most'} {high} ({b})"
        return None

    return check


def _pair_ordered(key: str):
    """A [low, high] range: low must not exceed high."""

    def check(config):
        try:
            low, high = _get(config, key)
        except KeyError:
            return None
        return f"config {key}: {[low, high]} has its low end above its high end (write [{high}, {low}])" if low > high else None

    return check


def _member(key: str, of: str, inside: bool = True):
    """The value at ``key`` must be (``inside``), or must not be, one of the list at ``of``."""

    def check(config):
        try:
            value, listed = _get(config, key), _get(config, of)
        except KeyError:
            return None
        if (value in listed) == inside:
            return None
        if inside:
            return f"config {key} ({value!r}) is not one of {of} {listed}"
        return f"config {key} ({value!r}) is one of {of} {listed}: it must name a split without masks"

    return check


# The constraints between keys that the schema cannot state; each names both keys.
CONSTRAINTS = [
    _member("data.train_split", "data.splits"),
    _member("data.cam_split", "data.splits"),
    _member("data.eval_split", "data.splits"),
    _member("data.test_split", "data.splits", inside=False),
    _member("classifier.variant", "classifier.variants"),
    _pair_ordered("data.generate.object_scale"),
    _pair_ordered("classifier.resize_long"),
    _pair_ordered("affinity.resize_long"),
    _pair_ordered("segmentation.resize_long"),
    _ordered("eval_cams.thresholds.start", "eval_cams.thresholds.stop"),
    _ordered("affinity_labels.bg_threshold", "affinity_labels.fg_threshold", strict=True),
]


def check_config(config: dict, schema_path) -> None:
    """Coerce exponent-form numbers (and the other scalars the command line hands over as strings), validate against
    the schema, check the constraints; StageError on the first problem."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    coerce_scalars(config, schema)
    check_schema(config, schema)
    for constraint in CONSTRAINTS:
        problem = constraint(config)
        if problem:
            raise StageError(problem)
