"""The Snakemake DAG: config validation, its shape, a whole micro run, and what a change reruns."""
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from conftest import SNAKEMAKE, bare_env
from PIL import Image

from stages.affinity_labels import affinity_label
from stages.data.photos import results_name
from stages.data.voc import read_image
from stages.ops.thresholds import by_class_id
from stages.utils.io import read_label_png

ROOT = Path(__file__).resolve().parents[1]


def test_every_rule_names_the_conda_environment_of_the_pinned_requirements():
    """--sdm conda builds envs/wsss.yaml: it must hold exactly the pins pip installs from the requirements."""
    env = yaml.safe_load((ROOT / "envs/wsss.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = [line for line in (ROOT / "envs/requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    assert pip == pins and len(pins) > 10
    for rules in (ROOT / "workflow/rules").glob("*.smk"):
        text = rules.read_text()
        n_rules = len(re.findall(r"^ *rule \w+:$", text, re.M))
        assert len(re.findall(r'^ *conda:\n *"\.\./\.\./envs/wsss\.yaml"$', text, re.M)) == n_rules, rules.name


def test_unknown_config_key_stops_the_run_in_one_line(snakemake, workdir):
    proc = snakemake(workdir, "-n", "--config", "bogus_key=1", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "config: unknown key 'bogus_key'"
    assert len((proc.stdout + proc.stderr).strip().splitlines()) == 3  # with Snakemake's notes on the profile and config


@pytest.mark.parametrize("text, message", [
    ("classifier: {epochs: 2.0}", "config classifier.epochs: 2.0 is not an integer (write 2)"),
    ("affinity_labels: {fg_threshold: 0.05}",
     "config affinity_labels.bg_threshold (0.1) must be below affinity_labels.fg_threshold (0.05)"),
])
def test_a_bad_value_stops_the_run_in_one_line_naming_the_keys(snakemake, workdir, text, message):
    (workdir / "bad.yaml").write_text(text + "\n")
    proc = snakemake(workdir, "-n", "--configfile", "config/micro.yaml", "bad.yaml", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1] == message


def test_every_problem_of_the_config_stops_the_run_at_once_one_line_each(snakemake, workdir):
    (workdir / "bad2.yaml").write_text("classifier: {epochs: 2.0}\naffinity_labels: {fg_threshold: 0.05}\nrun: ..\n")
    proc = snakemake(workdir, "-n", "--configfile", "config/micro.yaml", "bad2.yaml", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-3:] == [
        "config classifier.epochs: 2.0 is not an integer (write 2)",
        "config run: '..': the run's name, not a path (letters, digits, _ . -, not starting with a dot): outputs go to "
        "results/<run>/",
        "config affinity_labels.bg_threshold (0.1) must be below affinity_labels.fg_threshold (0.05)"]


def test_a_yaml_mistake_in_the_default_config_names_the_file_and_line(snakemake, tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text("run: x\nclassifier:\n  epochs: 3\n   lr: 0.1\n")
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == \
        "config/config.yaml:4:6: not valid YAML: mapping values are not allowed here"


def test_make_run_names_a_yaml_mistake_in_the_files_it_is_given(tmp_path):
    """Snakemake reads the files of --configfile before the workflow can check them: make run checks them first."""
    (tmp_path / "mine.yaml").write_text("classifier: {epochs: 3\n")
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "check-config", f"CONFIG={tmp_path / 'mine.yaml'}",
                           f"BIN={Path(sys.executable).parent}"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"{tmp_path / 'mine.yaml'}:2:1: not valid YAML" in proc.stderr


def test_the_warnings_of_a_run_are_shown_at_its_end(snakemake, tiny_voc, own_dataset, tmp_path):
    root, _ = own_dataset(tiny_voc, tmp_path)
    with open(root / "train.txt", "a") as f:
        f.write("street/0001\n")  # listed twice: read once, with a warning in image_labels's log
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config").symlink_to(ROOT / "config")
    proc = snakemake(wd, "--cores", "1", "results/custom/labels/image_labels.json", "--configfile", "config/custom.yaml",
                     "--config", f"data_root={root}", "data={classes: [disc, square, triangle, cross]}")
    lines = proc.stderr.splitlines()
    at = lines.index("Warnings of this run (1; each job's log under results/custom has them in context):")
    assert lines[at + 1] == f"  warning: {root / 'train.txt'}: 1 repeated ids read once (first: 'street/0001')"


def test_a_number_in_exponent_form_reaches_the_stage_as_a_number(snakemake, workdir):
    (workdir / "lr.yaml").write_text("classifier: {lr: 1e-3}\n")
    proc = snakemake(workdir, "-n", "-p", "--configfile", "config/micro.yaml", "lr.yaml")
    assert '"lr": 0.001' in proc.stdout


def test_a_failing_jobs_error_line_reaches_the_terminal(snakemake, workdir):
    """The workflow profile loads for a plain call in the repository, and its show-failed-logs prints the error."""
    (workdir / "empty").mkdir()
    proc = snakemake(workdir, "--cores", "1", "results/custom/labels/image_labels.json",
                     "--configfile", "config/custom.yaml", "--config", "data_root=empty", check=False)
    assert proc.returncode != 0
    assert f"Using workflow specific profile {ROOT / 'profiles/default'}" in proc.stderr
    assert "error: empty/images: missing folder" in proc.stdout + proc.stderr


def test_stages_install_as_a_package_that_runs_from_any_directory(tmp_path):
    """pip install . gives every stage module (a compute node or a Snakemake module finds them installed)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "stages", src / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "envs/requirements.txt"):
        (src / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, src / name)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, capture_output=True)
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "stages").rglob("*.py"))
    assert sorted(p.relative_to(site).as_posix() for p in (site / "stages").rglob("*.py")) == modules
    proc = subprocess.run([sys.executable, "-m", "stages.make_cams", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, env=bare_env(PYTHONPATH=str(site)))
    assert proc.returncode == 0 and "usage: python -m stages.make_cams JOB" in proc.stderr


def test_jobs_run_without_the_venv_on_path_from_another_directory(snakemake, workdir):
    """snakemake --directory elsewhere, with no venv on PATH and no PYTHONPATH: the rules use Snakemake's own
    interpreter (the system python3 has no PIL) and find the stages package."""
    snakemake(workdir, "--cores", "1", "results/micro/labels/image_labels.json", "--configfile", "config/micro.yaml")
    assert json.loads((workdir / "results/micro/labels/image_labels.json").read_text())["labels"]


@pytest.mark.parametrize("key, value", [("seed", "minus-one"), ("precision", "fp8"), ("deterministic", "maybe")])
def test_a_wrong_value_stops_the_run_and_names_the_key(snakemake, workdir, key, value):
    proc = snakemake(workdir, "-n", "--configfile", "config/micro.yaml", "--config", f"{key}={value}", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert key in out and value in out


def test_deterministic_reaches_the_training_and_inference_stages(snakemake, workdir):
    """A param of every GPU stage, like device and precision: changing it reruns them."""
    proc = snakemake(workdir, "-n", "-p", "--forceall", "--configfile", "config/micro.yaml", "--config", "deterministic=true")
    jobs = [json.loads(job) for job in re.findall(r"-m stages\.core\.launch '([^']*)'", proc.stdout)]
    runtimes = {job["rule"]: job["params"]["runtime"] for job in jobs if "runtime" in job["params"]}
    assert set(runtimes) == {"train_classifier", "make_cams", "train_affinity", "random_walk", "train_segmentation",
                             "predict_segmentation"}
    assert all(r["deterministic"] is True for r in runtimes.values())


def test_the_dag_picture_is_the_workflows():
    """docs/dag.md is drawn from the rules (make dag): a rule added, removed or rewired without redrawing it fails."""
    from pipeline.dag import dag_md

    assert (ROOT / "docs/dag.md").read_text() == dag_md(), "the workflow changed: run make dag"
    rules = {r for f in (ROOT / "workflow/rules").glob("*.smk") for r in re.findall(r"^ *rule (\w+):", f.read_text(), re.M)}
    drawn = set(re.findall(r"^    (\w+) --> (\w+)$", (ROOT / "docs/dag.md").read_text(), re.M))
    assert {r for edge in drawn for r in edge} == rules - {"all"}


def test_dag_has_every_stage_of_the_paper(snakemake, planned_jobs, workdir):
    jobs = planned_jobs(snakemake(workdir, "-n", "--configfile", "config/config.yaml"))
    assert jobs == {
        "fingerprint": 5, "make_dataset": 1, "image_labels": 1, "train_classifier": 1, "make_cams": 1, "eval_cams": 1,
        "affinity_labels": 1, "train_affinity": 1, "random_walk": 1, "pseudo_labels": 1, "eval_pseudo_labels": 1,
        "train_segmentation": 2, "predict_segmentation": 3, "eval_segmentation": 3, "report": 1, "summary": 1, "figures": 1,
        "all": 1,
    }


def test_ablation_variants_are_one_rule_with_a_wildcard(snakemake, planned_jobs, workdir):
    jobs = planned_jobs(snakemake(workdir, "-n", "--configfile", "config/micro.yaml",
                                  "--config", "classifier={variants: [baseline, pcls, re, puzzle]}"))
    assert jobs["train_classifier"] == 4 and jobs["make_cams"] == 4 and jobs["eval_cams"] == 4
    assert jobs["train_affinity"] == 1


def job_resources(proc, rule: str) -> dict[str, str]:
    """The resources of the first ``rule`` job a dry run plans."""
    block = proc.stdout[proc.stdout.index(f"rule {rule}:"):]
    line = next(line for line in block.splitlines() if line.strip().startswith("resources:"))
    return dict(item.split("=", 1) for item in line.split(":", 1)[1].strip().split(", "))


@pytest.mark.parametrize("device, gpu", [("auto", "1"), ("cpu", "0")])
def test_the_slurm_profile_sizes_each_job_and_asks_for_gpus(snakemake, workdir, device, gpu):
    proc = snakemake(workdir, "-n", "--profile", str(ROOT / "profiles/slurm"), "--configfile", "config/micro.yaml",
                     "--config", f"device={device}")
    train = job_resources(proc, "train_classifier")
    assert (train["runtime"], train["mem_mb"], train["cpus_per_task"], train["gpu"]) == ("720", "32000", "8", gpu)
    assert job_resources(proc, "make_cams")["gpu"] == gpu and "gpu" not in job_resources(proc, "pseudo_labels")
    assert "slurm_partition" not in train and "slurm_account" not in train  # the user's own settings


@pytest.mark.slow
def test_gpu_jobs_run_side_by_side_each_on_its_own_device(snakemake, tmp_path):
    """--resources gpu=2 on a host with devices 0 and 1: two ablation variants train at once, each seeing its
    own device; on this CPU-only host they then compute on the CPU (device: auto)."""
    (tmp_path / "config").symlink_to(ROOT / "config")
    variants = ["baseline", "puzzle"]
    (tmp_path / "four.yaml").write_text(f"max_threads: 1\nclassifier: {{variants: [{', '.join(variants)}], epochs: 1}}\n")
    snakemake(tmp_path, *(f"results/micro/seed_0/classifier/{v}/model.pt" for v in variants), "--cores", "2",
              "--resources", "gpu=2", "--configfile", "config/micro.yaml", "four.yaml", "--config", "device=auto",
              env={"CUDA_VISIBLE_DEVICES": "0,1"})
    seen = [re.findall(r"CUDA_VISIBLE_DEVICES=(\S+)", (tmp_path / f"results/micro/seed_0/logs/train_classifier/{v}.log").read_text())
            for v in variants]
    assert all(len(devices) == 1 and devices[0] in ("0", "1") for devices in seen), seen
    assert {devices[0] for devices in seen} == {"0", "1"}  # two ran at once, on different devices


def job_settings(proc) -> dict[str, set[tuple[int, int]]]:
    """(threads, priority) of each rule's jobs in a dry run (Snakemake prints them where they are not 1 and 0)."""
    settings, rule = {}, None
    for block in proc.stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        threads = re.search(r"^ *threads: (\d+)$", block, re.M)
        priority = re.search(r"^ *priority: (\d+)$", block, re.M)
        settings.setdefault(rule, set()).add((int(threads[1]) if threads else 1, int(priority[1]) if priority else 0))
    return settings


@pytest.mark.parametrize("cores, upper_bound, seg_threads", [(2, True, 1), (8, True, 4), (8, False, 8)])
def test_the_chain_goes_first_and_the_deeplab_trainings_share_the_cores(snakemake, workdir, tmp_path, cores, upper_bound,
                                                                       seg_threads):
    """The pseudo-label chain, on every core, before the upper bound (priority); then the two DeepLabv3+ trainings and
    their predictions side by side, each on its share."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"max_threads": 16, "segmentation": {"upper_bound": upper_bound}}))
    jobs = job_settings(snakemake(workdir, "-n", "--forceall", "--cores", str(cores), "--configfile", "config/config.yaml",
                                  str(overlay)))
    for rule in ("make_cams", "affinity_labels", "train_affinity", "random_walk", "pseudo_labels"):
        assert jobs[rule] == {(cores, 1)}, rule
    assert jobs["train_classifier"] == {(cores, 0)}
    assert jobs["train_segmentation"] == jobs["predict_segmentation"] == {(seg_threads, 0)}


@pytest.fixture(scope="module")
def micro_run(snakemake, workdir):
    snakemake(workdir, "--cores", "2", "--configfile", "config/micro.yaml", "--config", "device=cpu")
    return workdir / "results" / "micro"


def test_micro_run_produces_valid_artifacts(micro_run):
    r = micro_run / "seed_0"
    ids = (micro_run / "labels/splits/train.txt").read_text().split()
    val_ids = (micro_run / "labels/splits/val.txt").read_text().split()
    labels = json.loads((micro_run / "labels/image_labels.json").read_text())["labels"]
    for image_id in ids:
        cam = np.load(r / f"cams/puzzle/{image_id}.npz")
        assert cam["keys"].tolist() == labels[image_id]
        assert cam["cam"].shape[1:] == (64, 64) and cam["cam_s4"].shape[1:] == (16, 16)
        rw = np.load(r / f"rw/{image_id}.npz")
        assert rw["rw"].shape == cam["cam"].shape and np.isfinite(rw["rw"].astype(np.float32)).all()
        for folder in ("affinity_labels", "pseudo_labels"):
            with Image.open(r / folder / f"{image_id}.png") as png:
                assert png.mode == "P" and png.size == (64, 64)
                assert set(np.unique(np.array(png))) <= {0, 255, *labels[image_id]}
    for masks in ("pseudo_labels", "ground_truth"):
        assert (r / f"segmentation/{masks}/model.pt").stat().st_size > 0
        assert json.loads((r / f"segmentation/{masks}/model.json").read_text())["stage"] == "train_segmentation"
        assert len(list((r / f"predictions/{masks}/val").glob("*.png"))) == len(val_ids)
    for rule in ("train_classifier/puzzle", "make_cams/puzzle", "random_walk/random_walk", "report/report"):
        assert (r / f"benchmarks/{rule}.tsv").read_text().startswith("s\th:m:s")
        assert (r / f"logs/{rule}.log").exists()
    assert "make_cams: 16 img in" in (r / "logs/make_cams/puzzle.log").read_text()
    assert (micro_run / "benchmarks/summary/summary.tsv").read_text().startswith("s\th:m:s")
    for figure in ("miou_per_class", "loss_curves", "examples"):
        with Image.open(micro_run / f"figures/{figure}.png") as png:
            assert png.format == "PNG" and png.size[0] > 200
    assert not list(micro_run.rglob("*.tmp")) and not list(micro_run.rglob(".*.staging"))


def test_micro_run_tables_parse(micro_run):
    rows = json.loads((micro_run / "tables/miou.json").read_text())
    assert [(row["stage"], row["split"]) for row in rows] == [
        ("cam", "train"), ("pseudo_labels", "train"), ("segmentation", "train"), ("segmentation", "val"),
        ("upper_bound", "val")]
    for row in rows:
        assert 0 <= row["miou"] <= 100
        assert list(row["per_class"]) == ["background", "disc", "square", "triangle", "cross"]
    md = (micro_run / "tables/miou.md").read_text()
    assert md.count("\n| ") == 1 + len(rows)
    assert (micro_run / "tables/miou.csv").read_text().splitlines()[0].startswith("stage,split,variant")


def all_background_miou(run: Path, split: str) -> float:
    """The mIoU of predicting background everywhere, counted from the masks: the background's IoU is its share of
    the scored pixels (the 255 outline left out), every other class present scores 0."""
    ids = (run / f"labels/splits/{split}.txt").read_text().split()
    masks = [np.array(Image.open(run.parents[1] / f"resources/micro/VOCdevkit/VOC2012/SegmentationClass/{i}.png"))
             for i in ids]
    scored = np.concatenate([m[m != 255] for m in masks])
    return 100 * np.mean(scored == 0) / len(np.unique(scored))


def test_micro_run_tables_beat_the_all_background_prediction(micro_run):
    """Every row of the micro run's table scores well above predicting background everywhere (about 15 here; the
    CAMs about 35, the pseudo labels 25, DeepLabv3+ on them and on the masks 25 to 45 after its 20 steps, in bf16
    and fp32): fails if the CAMs or the walk localise nothing, or if DeepLabv3+ learns nothing of its labels (with
    one epoch, two steps, it stayed at the all-background score)."""
    rows = {(row["stage"], row["split"]): row["miou"] for row in json.loads((micro_run / "tables/miou.json").read_text())}
    assert set(rows) == {("cam", "train"), ("pseudo_labels", "train"), ("segmentation", "train"),
                         ("segmentation", "val"), ("upper_bound", "val")}
    for (stage, split), miou in rows.items():
        baseline = all_background_miou(micro_run, split)
        assert 10 < baseline < 20
        assert miou > baseline + 5, (stage, split, miou, baseline)


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_report_renders_the_narrow_table_on_its_front_page(snakemake, micro_run, workdir):
    report = micro_run / "report.html"
    snakemake(workdir, "--configfile", "config/micro.yaml", "--config", "device=cpu", "--report", str(report))
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={workdir / 'chromium'}",
         "--virtual-time-budget=10000", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    rows = json.loads((micro_run / "tables/miou.json").read_text())
    # The front page's table stays narrow beside the workflow graph: the per-class tables are in Results.
    front = re.search(r"<caption>mIoU \(%\) per scored stage.*?</table>", dom, re.S).group(0)
    assert re.findall(r'<th class="head">(.*?)</th>', front) == ["stage", "split", "mIoU", "spread"]
    assert re.findall(r"<tr><td>(.*?)</td>\n<td>(.*?)</td>\n<td>(.*?)</td>", front) == [
        (f"{r['stage']} ({r['variant']})" if r["stage"] == "cam" else r["stage"], r["split"], f"{r['miou']:.2f}")
        for r in rows]
    # ... and the per-class tables, over the seeds and per seed, under Results > Tables.
    tables = re.search(r'"Tables": (\{[^{}]*\})', report.read_text()).group(1)
    assert json.loads(tables) == {"over the seeds": ["results/micro/tables/miou.csv"],
                                  "seed 0": ["results/micro/seed_0/tables/miou.csv"]}


SHARDED = ["cams/puzzle", "affinity_labels", "rw", "pseudo_labels", "predictions/pseudo_labels/val"]


def test_two_shards_give_the_bytes_of_one(snakemake, micro_run, tmp_path):
    """The per-image stages as two jobs each, from the same models (a copy of the micro run without their
    folders, where only they and the gathering may run), write byte-identical folders."""
    copy = tmp_path / "wf"
    shutil.copytree(micro_run.parents[1], copy, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    one, two = micro_run / "seed_0", copy / "results/micro/seed_0"
    for folder in SHARDED:
        shutil.rmtree(two / folder)
    snakemake(copy, *(f"results/micro/seed_0/{f}" for f in SHARDED), "--cores", "2", "--configfile", "config/micro.yaml",
              "--config", "device=cpu", "shards=2", "--allowed-rules", "make_cams", "affinity_labels", "random_walk",
              "pseudo_labels", "predict_segmentation", "gather_shards")
    for folder in SHARDED:
        names = sorted(p.relative_to(one / folder) for p in (one / folder).rglob("*") if p.is_file())
        assert names and sorted(p.relative_to(two / folder) for p in (two / folder).rglob("*") if p.is_file()) == names
        assert all((one / folder / n).read_bytes() == (two / folder / n).read_bytes() for n in names), folder
        assert len(list((two / "shards" / folder).glob("*-of-2"))) == 2


def test_a_second_run_has_nothing_to_do(snakemake, micro_run, workdir):
    proc = snakemake(workdir, "-n", "--configfile", "config/micro.yaml", "--config", "device=cpu")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_a_changed_random_walk_parameter_reruns_only_what_follows(snakemake, planned_jobs, micro_run, workdir):
    (workdir / "beta8.yaml").write_text("random_walk: {radius: 5, beta: 8, exp_times: 4}\n")
    proc = snakemake(workdir, "-n", "--configfile", "config/micro.yaml", "beta8.yaml", "--config", "device=cpu")
    jobs = planned_jobs(proc)
    assert set(jobs) == {"random_walk", "pseudo_labels", "eval_pseudo_labels", "train_segmentation",
                         "predict_segmentation", "eval_segmentation", "report", "summary", "figures", "all"}
    assert jobs["train_segmentation"] == 1  # the upper bound does not depend on the random walk


def test_an_added_variant_plans_only_its_own_jobs_and_the_tables(snakemake, planned_jobs, micro_run, workdir):
    (workdir / "variants.yaml").write_text("classifier: {variants: [puzzle, baseline]}\n")
    proc = snakemake(workdir, "-n", "--configfile", "config/micro.yaml", "variants.yaml", "--config", "device=cpu")
    assert planned_jobs(proc) == {"train_classifier": 1, "make_cams": 1, "eval_cams": 1, "ablation": 1, "report": 1,
                                  "summary": 1, "figures": 1, "all": 1}
    assert "wildcards: seed=0, variant=baseline" in proc.stdout and "variant=puzzle" not in proc.stdout


def test_a_changed_worker_count_reruns_nothing(snakemake, micro_run, workdir):
    proc = snakemake(workdir, "-n", "--configfile", "config/micro.yaml", "--config", "device=cpu", "num_workers=2")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_dropping_the_upper_bound_retrains_nothing(snakemake, planned_jobs, micro_run, workdir):
    (workdir / "no_upper_bound.yaml").write_text("segmentation: {upper_bound: false}\n")
    proc = snakemake(workdir, "-n", "--configfile", "config/micro.yaml", "no_upper_bound.yaml", "--config", "device=cpu")
    assert planned_jobs(proc) == {"report": 1, "summary": 1, "figures": 1, "all": 1}


def test_a_folder_of_new_photos_is_segmented_as_the_run_predicts_its_val_split(snakemake, planned_jobs, micro_run,
                                                                               workdir, tmp_path):
    """The val images renamed and re-encoded (lossless PNG, in the split's order): segment plans no retraining and
    gives predict_segmentation's masks, pixel for pixel."""
    ids = (micro_run / "labels/splits/val.txt").read_text().split()
    photos = tmp_path / "new photos"
    photos.mkdir()
    for k, image_id in enumerate(ids):
        with Image.open(workdir / f"resources/micro/VOCdevkit/VOC2012/JPEGImages/{image_id}.jpg") as img:
            img.save(photos / f"photo_{k:02d}.png")
    args = ["segment", "--configfile", "config/micro.yaml", "--config", "device=cpu", f"segment_images={photos}"]
    assert planned_jobs(snakemake(workdir, "-n", *args)) == {"fingerprint": 1, "segment": 1}
    snakemake(workdir, "--cores", "2", *args)
    out = micro_run / "segmented" / results_name(photos)
    for k, image_id in enumerate(ids):
        np.testing.assert_array_equal(np.array(Image.open(out / f"masks/photo_{k:02d}.png")),
                                      np.array(Image.open(micro_run / f"seed_0/predictions/pseudo_labels/val/{image_id}.png")))
    assert len((out / "classes.csv").read_text().splitlines()) == 1 + len(ids)


# -- several seeds: a second seed added to the micro run runs only that seed's jobs and the tables over the seeds ----

PER_SEED_JOBS = {"train_classifier": 1, "make_cams": 1, "eval_cams": 1, "affinity_labels": 1, "train_affinity": 1,
                 "random_walk": 1, "pseudo_labels": 1, "eval_pseudo_labels": 1, "train_segmentation": 2,
                 "predict_segmentation": 3, "eval_segmentation": 3, "report": 1}


@pytest.fixture(scope="module")
def seeds_run(snakemake, planned_jobs, micro_run, workdir, tmp_path_factory):
    """A copy of the micro run with seed 1 added: (its folder, the jobs the addition planned)."""
    copy = tmp_path_factory.mktemp("seeds") / "wf"
    shutil.copytree(workdir, copy, symlinks=True)
    args = ["--configfile", "config/micro.yaml", "--config", "device=cpu", "seeds=[0,1]"]
    planned = planned_jobs(snakemake(copy, "-n", *args))
    snakemake(copy, "--cores", "2", *args)
    return copy, planned


def test_an_added_seed_runs_only_its_own_jobs_and_the_tables_over_the_seeds(snakemake, planned_jobs, seeds_run):
    copy, planned = seeds_run
    assert planned == {**PER_SEED_JOBS, "summary": 1, "figures": 1, "all": 1}
    proc = snakemake(copy, "-n", "--configfile", "config/micro.yaml", "--config", "device=cpu", "seeds=[0,1,2]")
    assert planned_jobs(proc) == {**PER_SEED_JOBS, "summary": 1, "figures": 1, "all": 1}
    assert "seed=2" in proc.stdout and "seed=0" not in proc.stdout and "seed=1" not in proc.stdout


def test_the_summary_is_the_mean_and_std_of_the_seeds_tables(seeds_run):
    run = seeds_run[0] / "results/micro"
    per_seed = [json.loads((run / f"seed_{seed}/tables/miou.json").read_text()) for seed in (0, 1)]
    rows = json.loads((run / "tables/miou.json").read_text())
    assert [(r["stage"], r["split"]) for r in rows] == [(r["stage"], r["split"]) for r in per_seed[0]]
    for k, row in enumerate(rows):
        values = [table[k]["miou"] for table in per_seed]
        assert row["seeds"] == [0, 1] and row["per_seed"]["1"]["miou"] == values[1]
        assert row["miou"] == pytest.approx(statistics.mean(values), abs=1e-9)
        assert row["miou_std"] == pytest.approx(statistics.stdev(values), abs=1e-9)
        assert (row["miou_min"], row["miou_max"]) == (min(values), max(values))
        for c in row["per_class"]:
            class_values = [table[k]["per_class"][c] for table in per_seed]
            assert row["per_class"][c] == pytest.approx(statistics.mean(class_values), abs=1e-9)
            assert row["per_class_std"][c] == pytest.approx(statistics.stdev(class_values), abs=1e-9)
    first = rows[0]
    md = (run / "tables/miou.md").read_text()
    assert f"| {first['miou']:.2f} | {first['miou_std']:.2f} | {first['miou_min']:.2f}-{first['miou_max']:.2f} |" in md
    overview = (run / "tables/overview.csv").read_text().splitlines()
    assert overview[0] == "stage,split,mIoU,spread" and len(overview) == 1 + len(rows)


# -- an interrupted job: Snakemake removes a job's outputs when it starts and when it fails, and everything after it
# still exists from the run before. A plain rerun must finish it (resuming its staged images or its checkpoint) and
# rerun everything after it, never take the older tables for current. ---------------------------------------------

# What depends on the CAMs (the per-image stage of these tests) and on the classifier (the training stage).
AFTER_CAMS = {"eval_cams", "affinity_labels", "train_affinity", "random_walk", "pseudo_labels", "eval_pseudo_labels",
              "train_segmentation", "predict_segmentation", "eval_segmentation", "report", "summary", "figures"}
AFTER_CLASSIFIER = {"make_cams", *AFTER_CAMS}


@pytest.fixture
def copied_run(micro_run, workdir, tmp_path):
    """A copy of the finished micro run (results, dataset, Snakemake's records) that a test may interrupt."""
    copy = tmp_path / "wf"
    shutil.copytree(workdir, copy, symlinks=True)
    return copy


def micro(snakemake, wd, *args, overlay=None, check=True):
    extra = []
    if overlay:
        (wd / "overlay.yaml").write_text(overlay)
        extra = ["overlay.yaml"]
    return snakemake(wd, *args, "--configfile", "config/micro.yaml", *extra, "--config", "device=cpu", check=check)


def fail_make_cams(snakemake, wd, *args, overlay=None):
    """make_cams started (Snakemake removes its folder), stages 12 of the 16 images, then stops on an unreadable
    one; the image is put back as it was."""
    last = (wd / "results/micro/labels/splits/train.txt").read_text().split()[-1]
    image = wd / f"resources/micro/VOCdevkit/VOC2012/JPEGImages/{last}.jpg"
    shutil.copy2(image, wd / "kept.jpg")
    image.write_bytes(b"not a jpeg")
    proc = micro(snakemake, wd, "--cores", "1", *args, "results/micro/seed_0/cams/puzzle", overlay=overlay, check=False)
    shutil.copy2(wd / "kept.jpg", image)
    assert proc.returncode != 0 and "corrupt image" in proc.stdout + proc.stderr
    assert not (wd / "results/micro/seed_0/cams/puzzle").exists()
    assert len(list((wd / "results/micro/seed_0/cams/.puzzle.staging").glob("*.npz"))) == 12


# A hook every Python process of a run loads (sitecustomize, on PYTHONPATH): the process that renames a file onto
# $STOP_AT_CHECKPOINT stops itself (SIGSTOP) right after, so that the test interrupts the run at that point
STOP_AT_CHECKPOINT = """
import os, signal
_checkpoint, _replace = os.environ.get("STOP_AT_CHECKPOINT"), os.replace
def _replaced(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    if os.path.abspath(os.fspath(dst)) == _checkpoint:
        os.kill(os.getpid(), signal.SIGSTOP)
if _checkpoint:
    os.replace = _replaced
"""


def stopped_process(pid: int) -> psutil.Process | None:
    """The process below ``pid`` that has stopped itself, if any."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() == psutil.STATUS_STOPPED:
                    return child
    return None


def interrupt_training(wd, *args, overlay):
    """train_classifier started (Snakemake removes its model), stopped with Ctrl-C after its first epoch's checkpoint:
    the training holds still once the checkpoint is in place, gets the Ctrl-C with Snakemake, and takes it when it
    is let go on."""
    (wd / "overlay.yaml").write_text(overlay)
    (wd / "hooks").mkdir(exist_ok=True)
    (wd / "hooks/sitecustomize.py").write_text(STOP_AT_CHECKPOINT)
    checkpoint = wd / "results/micro/seed_0/checkpoints/train_classifier/puzzle.pt"
    command = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(wd), "--cores", "1", *args,
               "results/micro/seed_0/classifier/puzzle/model.pt", "--configfile", "config/micro.yaml", "overlay.yaml",
               "--config", "device=cpu"]
    env = bare_env(PYTHONPATH=str(wd / "hooks"), STOP_AT_CHECKPOINT=str(checkpoint.absolute()))
    # Ctrl-C reaches it even where the suite itself was started in the background, which ignores SIGINT
    proc = subprocess.Popen(command, cwd=wd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while (stopped := stopped_process(proc.pid)) is None:
        assert proc.poll() is None, "the run ended before its training wrote a checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C on a terminal: Snakemake and its job; Snakemake removes its outputs
    stopped.resume()  # the training takes its Ctrl-C
    assert proc.wait() != 0
    assert checkpoint.exists() and not (wd / "results/micro/seed_0/classifier/puzzle/model.pt").exists()


def planned_rules(snakemake, planned_jobs, wd, overlay=None) -> set[str]:
    return set(planned_jobs(micro(snakemake, wd, "-n", overlay=overlay))) - {"all"}


def test_a_per_image_stage_interrupted_after_a_setting_change_is_finished_and_everything_after_it(
        snakemake, planned_jobs, copied_run):
    overlay = "cams: {scales: [1.0, 0.75], flip: true}\n"
    fail_make_cams(snakemake, copied_run, overlay=overlay)
    assert planned_rules(snakemake, planned_jobs, copied_run, overlay) == {"make_cams", *AFTER_CAMS}
    proc = micro(snakemake, copied_run, "--cores", "1", "results/micro/seed_0/cams/puzzle", overlay=overlay)
    assert proc.returncode == 0
    log = (copied_run / "results/micro/seed_0/logs/make_cams/puzzle.log").read_text()
    assert "puzzle: 12 of 16 images staged by an earlier run; computing the other 4" in log


def test_a_per_image_stage_interrupted_after_forcerun_is_finished_and_everything_after_it(snakemake, planned_jobs,
                                                                                        copied_run):
    fail_make_cams(snakemake, copied_run, "--forcerun", "make_cams")
    assert planned_rules(snakemake, planned_jobs, copied_run) == {"make_cams", *AFTER_CAMS}


def test_a_training_interrupted_after_a_setting_change_or_forcerun_resumes_and_everything_after_it_reruns(
        snakemake, planned_jobs, copied_run):
    overlay = "classifier: {epochs: 3}\n"  # a changed setting
    interrupt_training(copied_run, overlay=overlay)
    assert planned_rules(snakemake, planned_jobs, copied_run, overlay) == {"train_classifier", *AFTER_CLASSIFIER}
    micro(snakemake, copied_run, "--cores", "1", "results/micro/seed_0/classifier/puzzle/model.pt", overlay=overlay)
    log = (copied_run / "results/micro/seed_0/logs/train_classifier/puzzle.log").read_text()
    assert "train_classifier[puzzle]: resumed from" in log and "epoch=3" in log
    # the same settings now, the classifier up to date: --forcerun, interrupted
    interrupt_training(copied_run, "--forcerun", "train_classifier", overlay=overlay)
    assert planned_rules(snakemake, planned_jobs, copied_run, overlay) == {"train_classifier", *AFTER_CLASSIFIER}


def test_a_dry_run_and_the_linter_leave_the_tree_as_they_found_it(snakemake, copied_run):
    """Nothing runs or writes while Snakemake parses the workflow (Snakemake's own records aside)."""
    def tree():
        return {p.relative_to(copied_run): p.stat().st_mtime_ns for p in copied_run.rglob("*")
                if ".snakemake" not in p.parts}

    before = tree()
    micro(snakemake, copied_run, "-n")
    micro(snakemake, copied_run, "--lint", check=False)
    assert tree() == before


# thresholds: auto and masks (rules choose_affinity_thresholds and choose_pseudo_thresholds)
AFTER_AFFINITY_LABELS = {"affinity_labels", "train_affinity", "random_walk", "pseudo_labels", "eval_pseudo_labels",
                         "train_segmentation", "predict_segmentation", "eval_segmentation", "report", "summary",
                         "figures"}


def test_thresholds_auto_chooses_them_and_the_stages_and_tables_use_its_choice(snakemake, planned_jobs, copied_run):
    """Only the choose rules and what follows the affinity labels run; the files hold a value per class (the
    published one, with a warning, for a class in fewer than min_images training images); the affinity labels are
    the CAMs labelled at those values; the tables name them; a changed pseudo-label criterion reruns only what
    follows the walk's choice."""
    overlay = "thresholds: auto\n"
    assert planned_rules(snakemake, planned_jobs, copied_run, overlay) == {
        "choose_affinity_thresholds", "choose_pseudo_thresholds", *AFTER_AFFINITY_LABELS}
    micro(snakemake, copied_run, "--cores", "2", overlay=overlay)
    run = copied_run / "results/micro"
    chosen = {p: json.loads((run / f"seed_0/thresholds/{p}.json").read_text()) for p in ("affinity_labels", "pseudo_labels")}
    index = json.loads((run / "labels/image_labels.json").read_text())
    ids = (run / "labels/splits/train.txt").read_text().split()
    counts = {name: sum(c in index["labels"][i] for i in ids) for c, name in enumerate(index["classes"], 1)}
    aff = chosen["affinity_labels"]["values"]["affinity_labels"]
    assert set(aff["fg_threshold"]) == {name for name, n in counts.items() if n}
    for name, n in counts.items():
        source = chosen["affinity_labels"]["classes"].get(name, {}).get("source")
        assert source == (None if n == 0 else "published" if n < 5 else "deletion"), (name, n, source)
        if source == "published":
            assert (aff["fg_threshold"][name], aff["bg_threshold"][name]) == (0.4, 0.1)
        elif source:
            assert 0 < aff["bg_threshold"][name] < aff["fg_threshold"][name] < 1
    rare = [name for name, n in counts.items() if 0 < n < 5]
    warnings = (run / "tables/warnings.md").read_text()
    assert all(f"class {name!r} is in {counts[name]} image" in warnings for name in rare)
    assert chosen["pseudo_labels"]["values"]["random_walk"]["beta"] in (5, 10, 20, 40)
    # the affinity labels of an image: its CAMs at its classes' chosen values
    cfg = yaml.safe_load((ROOT / "config/micro.yaml").read_text())["affinity_labels"]
    cfg |= {k: by_class_id(v, index["classes"], 0.5) for k, v in aff.items()}
    image_id = ids[0]
    cam = np.load(run / f"seed_0/cams/puzzle/{image_id}.npz")
    img = read_image(copied_run / f"resources/micro/VOCdevkit/VOC2012/JPEGImages/{image_id}.jpg")
    expect = affinity_label(img, cam["cam"].astype(np.float32), cam["keys"], cfg)
    assert np.array_equal(read_label_png(run / f"seed_0/affinity_labels/{image_id}.png"), expect)
    table = (run / "tables/miou.md").read_text()
    assert "Thresholds:" in table and "(auto, criterion deletion, on 16 training images, no mask read)" in table
    assert "(auto, criterion otsu, on 16 training images, no mask read)" in table
    overlay += "choose_thresholds: {criterion: {affinity_labels: deletion, pseudo_labels: deletion}}\n"
    assert planned_rules(snakemake, planned_jobs, copied_run, overlay) == {
        "choose_pseudo_thresholds", *(AFTER_AFFINITY_LABELS - {"affinity_labels", "train_affinity"})}


def test_thresholds_masks_sweep_a_splits_masks_and_stop_in_one_line_on_a_class_with_too_few(snakemake, copied_run):
    """Too few images of a class among the first 3: one line naming the split and the class, no file. On all 16
    (min_images 2): each class's t* is a candidate, its fg / bg bracket it, and the walk's beta is the best scored."""
    thresholds = copied_run / "results/micro/seed_0/thresholds"
    proc = micro(snakemake, copied_run, "--cores", "1", "results/micro/seed_0/thresholds/affinity_labels.json",
                 overlay="thresholds: masks\nchoose_thresholds: {mask_images: 3}\n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"thresholds: masks: split train: class '\w+' is in [0-4] of its images with masks, fewer than "
                     r"choose_thresholds.min_images \(5\)\n", out), out[-2000:]
    assert not (thresholds / "affinity_labels.json").exists()
    micro(snakemake, copied_run, "--cores", "2", "results/micro/seed_0/thresholds/pseudo_labels.json",
          overlay="thresholds: masks\nchoose_thresholds: {mask_images: 16, min_images: 2}\n")
    aff = json.loads((thresholds / "affinity_labels.json").read_text())
    walk = json.loads((thresholds / "pseudo_labels.json").read_text())
    assert (aff["how"], aff["split"], aff["images"], walk["images"]) == ("masks", "train", 16, 16)
    for name, c in aff["classes"].items():
        t = c["t_star"]
        assert c["source"] == "masks" and round(t * 20) == t * 20
        fg, bg = aff["values"]["affinity_labels"]["fg_threshold"][name], aff["values"]["affinity_labels"]["bg_threshold"][name]
        assert (fg, bg) == (round(t + (1 - t) * 0.33, 4), round(t * 0.5, 4))
    beta = walk["values"]["random_walk"]["beta"]
    assert walk["betas"][str(beta)] == max(walk["betas"].values()) and 0 < walk["betas"][str(beta)] <= 1
    assert walk["values"]["pseudo_labels"]["threshold"] == {n: c["t_star"] for n, c in walk["classes"].items()}
