"""The config check at start-up: strict integers, exponent-form numbers, and the constraints between keys."""
import re

import pytest
import yaml
from conftest import ROOT

from stages import StageError
from stages.config import CONSTRAINTS, check_config

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def merge(base: dict, extra: dict) -> dict:
    """``extra`` merged into ``base``, as Snakemake merges a later --configfile into an earlier one."""
    for k, v in extra.items():
        base[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def merged(*names) -> dict:
    config = {}
    for name in names:
        merge(config, yaml.safe_load((ROOT / "config" / name).read_text()))
    return config


def changed(text: str) -> dict:
    """The micro config with the YAML ``text`` merged in."""
    return merge(merged("micro.yaml"), yaml.safe_load(text))


@pytest.mark.parametrize("names", [("config.yaml",), ("micro.yaml",), ("voc2012.yaml",), ("coco2014.yaml",), ("custom.yaml",),
                                   ("voc2012.yaml", "voc2012_resnet50.yaml")])
def test_the_shipped_configs_pass(names):
    check_config(merged(*names), SCHEMA)


def test_numbers_in_exponent_form_are_numbers():
    config = changed("run: 1e3\nclassifier: {lr: 1e-3, weight_decay: 5E-4}\nsegmentation: {lr: '+7e-3'}")
    assert config["classifier"]["lr"] == "1e-3"  # what YAML 1.1 makes of it
    check_config(config, SCHEMA)
    assert config["classifier"]["lr"] == 0.001 and config["classifier"]["weight_decay"] == 0.0005
    assert config["segmentation"]["lr"] == 0.007
    assert config["run"] == "1e3"  # only where the schema asks for a number


def test_yaml_booleans_from_the_command_line_are_booleans():
    """Snakemake's --config reads deterministic=true as the string 'true' (only True is a boolean to it)."""
    config = changed("deterministic: 'true'\nrun: 'false'")
    check_config(config, SCHEMA)
    assert config["deterministic"] is True and config["run"] == "false"  # only where the schema asks for a boolean


@pytest.mark.parametrize("text, message", [
    ("classifier: {epochs: 2.0}", "config classifier.epochs: 2.0 is not an integer (write 2)"),
    ("segmentation: {batch_size: 8.5}", "config segmentation.batch_size: 8.5 is not an integer"),
    ("seed: true", "config seed: True is not of type 'integer'"),
    ("classifier: {lr: 1e-3x}", "config classifier.lr: '1e-3x' is not of type 'number'"),
    ("bogus_key: 1", "config: unknown key 'bogus_key'"),
    ("affinity: {bogus: 1, other: 2}", "config affinity: unknown keys 'bogus', 'other'"),
    ("classifier: {resize_long: [80, 56]}", "config classifier.resize_long: [80, 56] has its low end above its high end (write [56, 80])"),
    ("segmentation: {resize_long: [80, 56]}", "config segmentation.resize_long: [80, 56] has its low end above"),
    ("affinity: {resize_long: [80, 56]}", "config affinity.resize_long: [80, 56] has its low end above"),
    ("data: {generate: {object_scale: [0.3, 0.2]}}", "config data.generate.object_scale: [0.3, 0.2] has its low end above"),
    ("eval_cams: {thresholds: {start: 0.8, stop: 0.05}}",
     "config eval_cams.thresholds.start (0.8) must be at most eval_cams.thresholds.stop (0.05)"),
    ("affinity_labels: {fg_threshold: 0.05}",
     "config affinity_labels.bg_threshold (0.1) must be below affinity_labels.fg_threshold (0.05)"),
    ("affinity_labels: {fg_threshold: 0.1}",
     "config affinity_labels.bg_threshold (0.1) must be below affinity_labels.fg_threshold (0.1)"),
    ("data: {cam_split: nope}", "config data.cam_split ('nope') is not one of data.splits ['train', 'val']"),
    ("data: {test_split: val}", "config data.test_split ('val') is one of data.splits ['train', 'val']: it must name a split"),
    ("classifier: {crop_size: 48}", "config classifier.crop_size: 48 is not a multiple of 32"),
    ("affinity: {crop_size: 80}", "config affinity.crop_size: 80 is not a multiple of 32"),
    ("segmentation: {crop_size: 100}", "config segmentation.crop_size: 100 is not a multiple of 32"),
    ("classifier: {variant: re}", "config classifier.variant ('re') is not one of classifier.variants ['puzzle']"),
])
def test_a_bad_value_is_one_line_naming_the_keys(text, message):
    with pytest.raises(StageError) as e:
        check_config(changed(text), SCHEMA)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_seeds_given_on_the_command_line_are_integers():
    """``--config seeds=[0,1,2]`` hands Snakemake's list items over as strings."""
    config = changed("seeds: ['0', '1', ' 2']")
    check_config(config, SCHEMA)
    assert config["seeds"] == [0, 1, 2]


@pytest.mark.parametrize("text, message", [
    ("seeds: ['one']", "config seeds.0: 'one' is not of type 'integer'"),
    ("seeds: [0, 0]", "config seeds: [0, 0] has non-unique elements"),
    ("seeds: []", "config seeds: [] should be non-empty"),
])
def test_bad_seeds_name_the_key(text, message):
    with pytest.raises(StageError, match=re.escape(message)):
        check_config(changed(text), SCHEMA)


def test_every_constraint_is_met_by_the_micro_config():
    assert [c(merged("micro.yaml")) for c in CONSTRAINTS] == [None] * len(CONSTRAINTS)
