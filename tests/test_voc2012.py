"""The paper's setup (config/voc2012.yaml) on a tiny generated dataset in the real VOC 2012 + SBD formats:
the DAG's shape, and the whole DAG end to end with the schedule shrunk to seconds."""
import contextlib
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import VOC_FIXTURE_EMPTY_BOX, VOC_FIXTURE_EXTRA_OBJECT
from PIL import Image

from stages.data.voc import VOC_CLASSES
from stages.utils.io import read_label_png, save_label_png

ROOT = Path(__file__).resolve().parents[1]


TINY = {  # the paper's schedule shrunk to seconds on a CPU; two variants are enough for the ablation table
    "num_workers": 0,
    "classifier": {"backbone": "resnet18", "pretrained": False, "epochs": 1, "batch_size": 4, "resize_long": [48, 80],
                   "crop_size": 64, "variants": ["baseline", "puzzle"]},
    "cams": {"scales": [1.0, 0.5]},
    "affinity_labels": {"crf": {"iterations": 1}},
    "affinity": {"backbone_init": "classifier", "epochs": 1, "batch_size": 4, "resize_long": [48, 80], "crop_size": 64,
                 "radius": 5},
    "random_walk": {"radius": 5, "beta": 10, "exp_times": 4},
    "segmentation": {"encoder": "resnet18", "pretrained": False, "init_from_classifier": True, "decoder_channels": 32,
                     "epochs": 1, "batch_size": 4, "resize_long": [48, 80], "crop_size": 64},
    "predict_segmentation": {"scales": [1.0], "crf": {"iterations": 1}},
}


@pytest.fixture(scope="module")
def data(make_voc_fixture, tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_data")
    return root, make_voc_fixture(root)


def test_voc2012_config_has_the_papers_settings():
    cfg = yaml.safe_load((ROOT / "config/voc2012.yaml").read_text())
    c, a, s = cfg["classifier"], cfg["affinity"], cfg["segmentation"]
    assert (c["batch_size"], c["epochs"], c["lr"], c["weight_decay"], c["resize_long"], c["crop_size"]) == (32, 15, 0.1, 1e-4, [320, 640], 512)
    assert (c["alpha_max"], c["alpha_ramp"], c["variants"]) == (4.0, 0.5, ["puzzle"])
    # the reference README's pipeline: ResNeSt-101 throughout, exact weights, the reference's optimizer everywhere
    assert (c["backbone"], a["backbone_init"], s["encoder"]) == ("resnest101e.in1k", "imagenet", "resnest101e.in1k")
    assert c["optimizer"] == a["optimizer"] == s["optimizer"] == "reference"
    ablation = yaml.safe_load((ROOT / "config/voc2012_resnet50.yaml").read_text())
    assert ablation["classifier"] == {"backbone": "resnet50.tv_in1k", "variants": ["baseline", "pcls", "re", "puzzle"]}
    assert cfg["cams"] == {"scales": [1.0, 0.5, 1.5, 2.0], "flip": True}
    assert cfg["eval_cams"]["thresholds"] == {"start": 0.05, "stop": 0.75, "step": 0.05}  # the reference's sweep
    assert cfg["eval"] == {"protocol": "full"}
    assert (a["batch_size"], a["epochs"], a["lr"], a["weight_decay"], a["radius"]) == (32, 3, 0.1, 1e-4, 10)
    assert (cfg["affinity_labels"]["fg_threshold"], cfg["affinity_labels"]["bg_threshold"]) == (0.40, 0.10)
    assert cfg["random_walk"] == {"radius": 5, "beta": 10, "exp_times": 8}
    assert cfg["pseudo_labels"]["threshold"] == 0.35
    assert (s["batch_size"], s["epochs"], s["lr"], s["weight_decay"], s["resize_long"], s["crop_size"]) == (32, 50, 0.007, 4e-5, [256, 1024], 512)
    assert cfg["predict_segmentation"]["scales"] == [0.5, 1.0, 1.5, 2.0]
    d = cfg["data"]
    assert (d["train_split"], d["cam_split"], d["eval_split"], d["test_split"]) == ("train_aug", "train", "val", "test")
    assert (d["labels"], d["mask_splits"]) == ("xml", ["train_aug", "train", "val"])  # as the reference reads labels


# One job per stage; DeepLabv3+ trained once (no upper bound) and predicted on test too.
PAPER_DAG = {"image_labels": 1, "train_classifier": 1, "make_cams": 1, "eval_cams": 1,
             "affinity_labels": 1, "train_affinity": 1, "random_walk": 1, "pseudo_labels": 1, "eval_pseudo_labels": 1,
             "train_segmentation": 1, "pack_test": 1, "report": 1, "summary": 1, "all": 1}


@pytest.fixture
def paper_dag(snakemake, planned_jobs):
    """``paper_dag(workdir, data_root)``: the planned jobs and the dry run's output of the paper's config."""

    def dag(workdir, data_root) -> tuple[dict, str]:
        proc = snakemake(workdir, "-n", "--configfile", "config/voc2012.yaml", "--config", f"data_root={data_root}")
        return planned_jobs(proc), proc.stdout

    return dag


def test_dag_converts_sbd_when_segmentation_class_aug_is_absent(paper_dag, data, workdir):
    root, _ = data
    jobs, out = paper_dag(workdir, root)
    assert {k: jobs.get(k) for k in [*PAPER_DAG, "convert_sbd"]} == {**PAPER_DAG, "convert_sbd": 1}
    assert "results/voc2012/seed_0/predictions/pseudo_labels/test" in out
    assert "results/voc2012/seed_0/tables/segmentation_pseudo_labels_val.json" in out
    assert "segmentation_pseudo_labels_test.json" not in out  # test has no masks to score against


def test_dag_reads_segmentation_class_aug_where_present(paper_dag, make_voc_fixture, tmp_path, workdir):
    make_voc_fixture(tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClassAug").mkdir()
    jobs, _ = paper_dag(workdir, tmp_path)
    assert "convert_sbd" not in jobs
    assert {k: jobs.get(k) for k in PAPER_DAG} == PAPER_DAG


def test_resnet50_ablation_adds_the_four_variants_and_their_table(snakemake, planned_jobs, data, workdir):
    root, _ = data
    proc = snakemake(workdir, "-n", "--configfile", "config/voc2012.yaml", "config/voc2012_resnet50.yaml",
                     "--config", f"data_root={root}")
    jobs = planned_jobs(proc)
    assert {k: jobs.get(k) for k in ("train_classifier", "make_cams", "eval_cams", "ablation", "train_affinity")} == \
        {"train_classifier": 4, "make_cams": 4, "eval_cams": 4, "ablation": 1, "train_affinity": 1}
    assert "results/voc2012_resnet50/tables/ablation.md" in proc.stdout
@pytest.mark.parametrize("where", ["ImageSets", "nowhere"])
def test_train_aug_list_under_image_sets_or_none_at_all(snakemake, paper_dag, make_voc_fixture, tmp_path, workdir, where):
    ids = make_voc_fixture(tmp_path)
    listed = tmp_path / "train_aug.txt"
    if where == "ImageSets":
        listed.rename(tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt")
    else:
        listed.unlink()
    jobs, _ = paper_dag(workdir, tmp_path)
    assert jobs["image_labels"] == 1
    snakemake(workdir, "results/voc2012_lists/labels/image_labels.json", "--cores", "1", "--configfile",
              "config/voc2012.yaml", "--config", f"data_root={tmp_path}", "run=voc2012_lists")
    train_aug = (workdir / "results/voc2012_lists/labels/splits/train_aug.txt").read_text().split()
    # found: the list as written; derived: SBD train + SBD val + VOC train - VOC val, sorted
    assert train_aug == (ids["train_aug"] if where == "ImageSets" else sorted(ids["train"] + ids["sbd"]))


def test_missing_weights_file_stops_the_run_at_start_up(snakemake, data, workdir):
    root, _ = data
    proc = snakemake(workdir, "-n", "--configfile", "config/voc2012.yaml", "--config", f"data_root={root}",
                     "segmentation={pretrained_path: nowhere.pth}", check=False)
    assert proc.returncode != 0
    assert "segmentation.pretrained_path: nowhere.pth is not a file" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def voc_run(snakemake, data, workdir):
    root, ids = data
    snakemake(workdir, "--cores", "2", "--configfile", "config/voc2012.yaml", "tiny.yaml",
              "--config", f"data_root={root}", "device=cpu")
    return workdir / "results" / "voc2012", root, ids


def test_sbd_masks_are_converted_and_labels_come_from_the_xml(voc_run):
    r, root, ids = voc_run
    aug = r.parents[1] / "resources/voc2012/SegmentationClassAug"
    assert sorted(p.stem for p in aug.glob("*.png")) == sorted(ids["train"] + ids["sbd"])
    index = json.loads((r / "labels/image_labels.json").read_text())
    assert index["source"] == "xml"
    assert sorted(index["labels"]) == sorted(ids["train_aug"] + ids["val"])
    assert index["unlabeled"] == sorted(ids["test"])
    # the XML's classes are the mask's, but for the fixture's two departures: the zero-width box on the first SBD
    # image is dropped (so that image agrees), the extra object on the first train image is a difference
    extra = ids["train"][0]
    for image_id in ids["train_aug"]:
        mask = read_label_png(aug / f"{image_id}.png")
        in_mask = sorted(int(c) for c in np.unique(mask) if 0 < c < 255)
        expected = sorted({*in_mask, VOC_FIXTURE_EXTRA_OBJECT[0]}) if image_id == extra else in_mask
        assert index["labels"][image_id] == expected, image_id
    assert VOC_FIXTURE_EMPTY_BOX[0] not in index["labels"][ids["sbd"][0]]
    assert index["label_disagreement"] == {
        "train_aug": {"images": len(ids["train_aug"]), "disagree": 1, "first": extra},
        "train": {"images": len(ids["train"]), "disagree": 1, "first": extra},
        "val": {"images": len(ids["val"]), "disagree": 0, "first": None},
    }
    # the tables count it where they score: the CAMs and pseudo labels on train
    assert f"xml labels differ from the mask's classes on 1 of {len(ids['train'])} train images (first: {extra})" \
        in (r / "tables/miou.md").read_text()
    for split in ("train_aug", "train", "val", "test"):
        assert (r / f"labels/splits/{split}.txt").read_text().split() == ids[split]


def test_tables_score_the_right_splits_and_hold_the_ablation(voc_run):
    r, _, _ = voc_run
    rows = json.loads((r / "tables/miou.json").read_text())
    scored = {(row["stage"], row["split"], row["variant"]) for row in rows}
    assert {("cam", "train", "baseline"), ("cam", "train", "puzzle"), ("pseudo_labels", "train", "puzzle"),
            ("segmentation", "val", "puzzle")} <= scored
    assert not any(split == "test" for _, split, _ in scored)
    assert list(rows[0]["per_class"]) == ["background", *VOC_CLASSES]
    ablation = json.loads((r / "tables/ablation.json").read_text())
    assert [a["variant"] for a in ablation] == ["baseline", "puzzle"]
    cams = {row["variant"]: row["miou"] for row in rows if row["stage"] == "cam"}
    assert all(a["miou"] == cams[a["variant"]] and a["split"] == "train" for a in ablation)
    assert (r / "tables/ablation.md").read_text().count("✓") == 1 + 3


def test_ablation_variants_have_cams_only_on_the_scored_split(voc_run):
    r, _, ids = voc_run
    # the variant feeding AffinityNet and the random walk needs train_aug; the others are only scored on train
    assert sorted(p.stem for p in (r / "seed_0/cams/puzzle").glob("*.npz")) == sorted(ids["train_aug"])
    assert sorted(p.stem for p in (r / "seed_0/cams/baseline").glob("*.npz")) == sorted(ids["train"])


def test_test_predictions_are_packed_for_the_evaluation_server(voc_run):
    r, root, ids = voc_run
    server = "results/VOC2012/Segmentation/comp6_test_cls"
    with tarfile.open(r / "seed_0/submission/voc2012_test.tar") as tar:
        assert sorted(tar.getnames()) == sorted(f"{server}/{i}.png" for i in ids["test"])
    for image_id in ids["test"]:
        with Image.open(r / "seed_0/submission" / server / f"{image_id}.png") as png, \
                Image.open(root / "VOCdevkit/VOC2012/JPEGImages" / f"{image_id}.jpg") as img:
            assert png.mode == "P" and png.size == img.size
            assert np.array(png).max() <= len(VOC_CLASSES)
    assert not list(r.rglob("*.tmp"))


def test_a_second_run_has_nothing_to_do(snakemake, voc_run, workdir):
    _, root, _ = voc_run
    proc = snakemake(workdir, "-n", "--configfile", "config/voc2012.yaml", "tiny.yaml",
                     "--config", f"data_root={root}", "device=cpu")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@contextlib.contextmanager
def edited(path: Path, keep: Path):
    """A dataset file changed in place for the block, then put back with its bytes and modification time."""
    shutil.copy2(path, keep)
    try:
        yield path
    finally:
        shutil.copy2(keep, path)


# What a change that only affects scoring reruns: the scores, the tables and the figures over them (and the
# fingerprint named after the new masks).
SCORING = {"fingerprint", "eval_cams", "eval_pseudo_labels", "eval_segmentation", "report", "summary", "figures",
           "ablation"}
TRAINING = {"image_labels", "train_classifier", "make_cams", "affinity_labels", "train_affinity", "random_walk",
            "pseudo_labels", "train_segmentation", "predict_segmentation", "pack_test"}


def test_a_dataset_edit_reruns_only_what_it_affects(snakemake, planned_jobs, voc_run, workdir, tmp_path):
    """Masks edited in place: without changing the image's classes, only scoring reruns; with a class added, the
    index and everything it feeds. An image replaced reruns what reads its pixels; put back, nothing is left to do."""
    _, root, ids = voc_run
    voc = root / "VOCdevkit/VOC2012"

    def planned():
        proc = snakemake(workdir, "-n", "--configfile", "config/voc2012.yaml", "tiny.yaml",
                         "--config", f"data_root={root}", "device=cpu")
        return set(planned_jobs(proc)) - {"all"}

    mask_path = voc / "SegmentationClass" / f"{ids['train'][0]}.png"
    with edited(mask_path, tmp_path / "mask.png"):
        mask = read_label_png(mask_path)
        classes = set(np.unique(mask)) - {0, 255}
        edge = (mask == 0) & (np.roll(mask, 1, axis=1) != 0)
        save_label_png(mask_path, np.where(edge, 255, mask).astype(np.uint8))  # the same classes, finer outlines
        assert set(np.unique(read_label_png(mask_path))) - {0, 255} == classes
        assert planned() == SCORING
        new_class = next(c for c in range(1, len(VOC_CLASSES) + 1) if c not in classes)
        save_label_png(mask_path, np.where(edge, new_class, mask).astype(np.uint8))  # a class appears
        assert planned() == SCORING | TRAINING
    image_path = voc / "JPEGImages" / f"{ids['val'][0]}.jpg"
    with edited(image_path, tmp_path / "image.jpg"):
        Image.open(image_path).rotate(180).save(image_path)  # a val image replaced: its predictions and their scores
        assert planned() == {"fingerprint", "predict_segmentation", "eval_segmentation", "report", "summary", "figures"}
    assert planned() == set()
