"""The config check at start-up: strict integers, exponent-form numbers, the constraints between keys, every
problem at once, the schema's defaults filled in."""
import re

import pytest
import yaml
from conftest import ROOT
from pipeline.config import (
    CONSTRAINTS,
    SCHEMA,
    ConfigError,
    check_config,
    constraint_errors,
    load_yaml,
    merge,
    run_config,
)


def merged(*names) -> dict:
    config = {}
    for name in names:
        merge(config, yaml.safe_load((ROOT / "config" / name).read_text()))
    return config


def changed(text: str) -> dict:
    """The micro config with the YAML ``text`` merged in."""
    return merge(merged("micro.yaml"), yaml.safe_load(text))


@pytest.mark.parametrize("names", [("config.yaml",), ("micro.yaml",), ("voc2012.yaml",), ("coco2014.yaml",), ("custom.yaml",),
                                   ("voc2012.yaml", "voc2012_resnet50.yaml"), ("config.yaml", "ablation.yaml")])
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
    ("data: {generate: {part_scale: [0.4, 0.2]}}", "config data.generate.part_scale: [0.4, 0.2] has its low end above"),
    ("data: {generate: {body_saturation: [90, 30]}}", "config data.generate.body_saturation: [90, 30] has its low end above"),
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
    with pytest.raises(ConfigError) as e:
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
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(changed(text), SCHEMA)


def test_every_constraint_is_met_by_the_micro_config():
    config = check_config(merged("micro.yaml"), SCHEMA)
    assert constraint_errors(config) == [] and len(CONSTRAINTS) >= 15


def test_every_problem_of_a_config_is_reported_at_once_one_line_each():
    config = changed("seed: -1\nclassifier: {epochs: 2.0, bogus: 1}\naffinity_labels: {fg_threshold: 0.05}\n"
                     "data: {cam_split: nope}\nsegmentation: {pretrained_path: /no/such/weights.pth}")
    with pytest.raises(ConfigError) as e:
        check_config(config, SCHEMA)
    assert e.value.errors == [
        "config classifier: unknown key 'bogus'",
        "config classifier.epochs: 2.0 is not an integer (write 2)",
        "config seed: -1 is less than the minimum of 0",
        "config data.cam_split ('nope') is not one of data.splits ['train', 'val']",
        "config affinity_labels.bg_threshold (0.1) must be below affinity_labels.fg_threshold (0.05)",
        "config segmentation.pretrained_path: /no/such/weights.pth is not a file",
    ]
    assert str(e.value) == "\n".join(e.value.errors)


def test_the_schema_holds_every_default():
    config = merged("micro.yaml")
    del config["classifier"]["optimizer"]
    check_config(config, SCHEMA)
    assert config["classifier"]["optimizer"] == "sgd" and config["classifier"]["accumulate"] == 1
    assert config["shards"] == 1 and config["deterministic"] is False and config["data"]["labels"] == "masks"
    assert config["affinity"]["pretrained_path"] is None and config["segmentation"]["dropout"] == [0.5, 0.5, 0.1]


@pytest.mark.parametrize("text, message", [
    ("run: ..", "config run: '..': the run's name, not a path"),
    ("run: ../elsewhere", "config run: '../elsewhere': the run's name, not a path"),
    ("run: .hidden", "config run: '.hidden': the run's name, not a path"),
    ("data: {root: /home/me/VOC2012}", "config data.root: '/home/me/VOC2012' is written by data.generate, so it must be"),
    ("data: {root: resources/../../elsewhere}", "config data.root: 'resources/../../elsewhere' is written by data.generate"),
])
def test_nothing_is_written_outside_results_and_resources(text, message):
    with pytest.raises(ConfigError) as e:
        check_config(changed(text), SCHEMA)
    assert e.value.errors[0].startswith(message)


def test_a_yaml_mistake_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("classifier:\n  epochs: 3\n   lr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(bad))}:3:6: not valid YAML: mapping values are not allowed here"):
        load_yaml(bad)
    assert constraint_errors({}) == []  # nothing to judge: the schema names what is missing


def test_the_run_of_a_command_line_is_its_files_then_its_overrides(monkeypatch):
    """What make run and make ablation print: the run Snakemake ran, --config run=X included."""
    monkeypatch.chdir(ROOT)
    assert run_config([])["run"] == merged("config.yaml")["run"]
    ablation = ["--configfile", "config/config.yaml", "config/ablation.yaml", "--cores", "2"]
    assert run_config(ablation)["run"] == merged("config.yaml", "ablation.yaml")["run"]
    config = run_config([*ablation, "--config", "run=other", "seeds=[0,1]", "--forcerun", "make_cams"])
    assert config["run"] == "other" and config["seeds"] == [0, 1]  # read as the workflow reads them
    assert config["shards"] == 1  # the schema's defaults filled in


@pytest.mark.parametrize("text, key, value", [
    ("random_walk: {beta: '30'}", ("random_walk", "beta"), 30), ("random_walk: {beta: '30.0'}", ("random_walk", "beta"), 30.0),
    ("classifier: {lr: '0.05'}", ("classifier", "lr"), 0.05), ("classifier: {lr: '.5e-1'}", ("classifier", "lr"), 0.05),
    ("classifier: {epochs: '+3'}", ("classifier", "epochs"), 3)])
def test_every_number_the_command_line_hands_over_as_text_is_a_number(text, key, value):
    """`--config 'random_walk={beta: 30}'`: Snakemake hands the values inside a mapping over as strings."""
    config = changed(text)
    check_config(config, SCHEMA)
    assert config[key[0]][key[1]] == value and type(config[key[0]][key[1]]) is type(value)


def test_a_number_out_of_range_from_the_command_line_says_so():
    with pytest.raises(ConfigError, match=r"config classifier\.epochs: -1 is less than the minimum of 1"):
        check_config(changed("classifier: {epochs: '-1'}"), SCHEMA)


@pytest.mark.parametrize("folder", [".", "..", "results", "results/micro/segmented"])
def test_a_photo_folder_that_holds_the_runs_results_is_refused(tmp_path, monkeypatch, folder):
    """segment_images=. (or its parent, or results/): the second call would read its own results as photos."""
    (tmp_path / "wf" / folder).mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path / "wf")
    errors = constraint_errors({**changed("{}"), "segment_images": folder})
    assert [e for e in errors if "segment_images" in e] == [
        f"config segment_images: {folder} holds the run's results (results/micro/segmented), which would be read "
        "as photos; give a folder of photos only"]


def test_two_photo_folders_of_one_name_keep_their_results_apart(tmp_path):
    from stages.data.photos import results_name

    (tmp_path / "a/holiday").mkdir(parents=True)
    (tmp_path / "b/holiday").mkdir(parents=True)
    names = {results_name(tmp_path / "a/holiday"), results_name(tmp_path / "b/holiday")}
    assert len(names) == 2 and all(n.startswith("holiday-") for n in names)
    assert constraint_errors({**changed("{}"), "segment_images": str(tmp_path / "a/holiday")}) == []
