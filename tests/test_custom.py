"""config/custom.yaml: a folder of photos with a tags file and no masks runs the whole DAG to a trained
DeepLabv3+ and its predictions, at the photos' own sizes; the tables say what could not be scored."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES
from PIL import Image

from stages.data.photos import results_name

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
BIG = (150, 200)  # (height, width) of the one large photo; the stages compute it at max_side 64

TINY = {  # seconds per stage on a CPU
    "num_workers": 0,
    "data": {"classes": CLASSES, "max_side": 64},
    "classifier": {"backbone": "resnet18", "pretrained": False, "epochs": 1, "batch_size": 4, "resize_long": [48, 64],
                   "crop_size": 64},
    "cams": {"scales": [1.0], "flip": False},
    "affinity_labels": {"crf": {"iterations": 1}},
    "affinity": {"backbone_init": "classifier", "epochs": 1, "batch_size": 4, "resize_long": [48, 64], "crop_size": 64,
                 "radius": 5},
    "random_walk": {"radius": 5, "beta": 10, "exp_times": 2},
    "pseudo_labels": {"crf": {"iterations": 1}},
    "segmentation": {"encoder": "resnet18", "pretrained": False, "init_from_classifier": True, "decoder_channels": 32,
                     "epochs": 1, "batch_size": 4, "resize_long": [48, 64], "crop_size": 64},
    "predict_segmentation": {"scales": [1.0], "flip": False, "crf": {"iterations": 1}},
}


@pytest.fixture(scope="module")
def photos(exif_jpeg, own_dataset, tiny_voc, tmp_path_factory):
    """Tags only: no masks, no annotations; one large photo and one EXIF-rotated one among the images."""
    root, classes = own_dataset(tiny_voc, tmp_path_factory.mktemp("own"))
    shutil.rmtree(root / "masks")
    shutil.rmtree(root / "Annotations")
    train = (root / "train.txt").read_text().splitlines()[2:4]  # training images: they get CAMs too
    big = next((root / "images").glob(f"{train[0]}.*"))
    Image.open(big).resize(BIG[::-1]).save(big)
    turned = next((root / "images").glob(f"{train[1]}.*"))
    exif_jpeg(turned.with_suffix(".jpg"), np.array(Image.open(turned).convert("RGB"))[:, :48], orientation=6)
    turned.unlink() if turned.suffix != ".jpg" else None
    return root, classes, {"big": train[0], "turned": train[1]}


def test_dag_without_masks_scores_nothing_and_trains_everything(snakemake, planned_jobs, photos, workdir):
    root, _, _ = photos
    jobs = planned_jobs(snakemake(workdir, "-n", "--configfile", "config/custom.yaml", "tiny.yaml",
                                  "--config", f"data_root={root}"))
    assert jobs == {"fingerprint": 4, "image_labels": 1, "train_classifier": 1, "make_cams": 1,
                    "affinity_labels": 1, "train_affinity": 1, "random_walk": 1, "pseudo_labels": 1,
                    "train_segmentation": 1, "predict_segmentation": 2, "report": 1, "summary": 1, "figures": 1, "all": 1}


@pytest.fixture(scope="module")
def custom_run(snakemake, photos, workdir):
    root, _, _ = photos
    snakemake(workdir, "--cores", "2", "--configfile", "config/custom.yaml", "tiny.yaml",
              "--config", f"data_root={root}", "device=cpu")
    return workdir / "results" / "custom"


def test_tags_only_run_reaches_predictions_at_the_photos_own_size(photos, custom_run):
    root, classes, special = photos
    r = custom_run
    index = json.loads((r / "labels/image_labels.json").read_text())
    assert index["labels"] == classes and index["source"] == "tags" and index["max_side"] == 64
    assert index["sizes"][special["big"]] == list(BIG) and index["sizes"][special["turned"]] == [48, 64]
    assert (r / "seed_0" / "segmentation/pseudo_labels/model.pt").stat().st_size > 0
    for split in ("train", "val"):
        ids = (r / f"labels/splits/{split}.txt").read_text().splitlines()
        for image_id in ids:
            with Image.open(r / "seed_0" / f"predictions/pseudo_labels/{split}/{image_id}.png") as png:
                assert png.mode == "P" and png.size == tuple(index["sizes"][image_id][::-1])
                assert np.array(png).max() <= len(CLASSES)
    cam = np.load(r / "seed_0" / f"cams/puzzle/{special['big']}.npz")
    assert cam["cam"].shape[1:] == (48, 64)  # computed at the capped size
    with Image.open(r / "seed_0" / "pseudo_labels/street/0001.png") as png:  # an id in a subfolder
        assert png.size == (64, 64)


def test_tables_leave_out_what_needs_masks_and_say_why(custom_run):
    assert json.loads((custom_run / "tables/miou.json").read_text()) == []
    md = (custom_run / "tables/miou.md").read_text()
    assert "- cam, pseudo_labels, segmentation on train: that split has no masks (data.mask_splits)" in md
    assert "- segmentation on val: that split has no masks (data.mask_splits)" in md
    with Image.open(custom_run / "figures/examples.png") as png:
        assert png.size[0] > 200


def test_a_tag_added_reruns_what_the_labels_feed_and_a_resaved_tags_file_nothing(snakemake, planned_jobs, photos,
                                                                                   custom_run, workdir, tmp_path):
    root, classes, _ = photos

    def planned():
        proc = snakemake(workdir, "-n", "--configfile", "config/custom.yaml", "tiny.yaml",
                         "--config", f"data_root={root}", "device=cpu")
        return set(planned_jobs(proc)) - {"all"}

    tags = root / "tags.csv"
    shutil.copy2(tags, tmp_path / "tags.csv")
    try:
        tags.write_text(tags.read_text())  # saved again, the same tags: a newer file, the same labels
        assert planned() == set()
        first, *rest = tags.read_text().splitlines()[1:]
        image_id, names = first.split(",")
        added = next(c for c in CLASSES if c not in names.split())
        tags.write_text("\n".join(["id,labels", f"{image_id},{names} {added}", *rest]) + "\n")
        assert planned() == {"fingerprint", "image_labels", "train_classifier", "make_cams", "affinity_labels", "train_affinity",
                             "random_walk", "pseudo_labels", "train_segmentation", "predict_segmentation", "report",
                             "summary", "figures"}
    finally:
        shutil.copy2(tmp_path / "tags.csv", tags)
    assert planned() == set()


@pytest.fixture(scope="module")
def holiday(snakemake, photos, custom_run, workdir, tmp_path_factory, exif_jpeg):
    """A folder as users have photos, segmented by rule segment: a corrupt file, an EXIF-rotated photo, a PNG with
    alpha and a 4000x3000 photo in a subfolder. Returns the folder, where its masks went, the run's arguments and
    its process."""
    root, _, _ = photos
    folder = tmp_path_factory.mktemp("photos") / "holiday"
    (folder / "day 2").mkdir(parents=True)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a photo")
    rng = np.random.default_rng(0)
    exif_jpeg(folder / "turned.jpg", rng.integers(0, 255, (40, 60, 3), np.uint8), orientation=6)
    Image.fromarray(rng.integers(0, 255, (50, 30, 4), np.uint8), mode="RGBA").save(folder / "alpha.png")
    Image.fromarray(np.full((3000, 4000, 3), 120, np.uint8)).save(folder / "day 2/big.jpg", quality=70)
    args = ["segment", "--configfile", "config/custom.yaml", "tiny.yaml", "--config", f"data_root={root}", "device=cpu",
            f"segment_images={folder}"]
    proc = snakemake(workdir, "--cores", "2", *args)
    return folder, custom_run / "segmented" / results_name(folder), args, proc


def test_new_photos_as_users_have_them_are_segmented_and_one_added_is_the_only_one_segmented_again(
        snakemake, custom_run, workdir, holiday):
    """Each mask at its photo's own size, the corrupt one listed with its reason, the rest segmented; then one photo
    added, and only it is segmented."""
    folder, out, args, proc = holiday
    sizes = {i: Image.open(out / f"masks/{i}.png").size for i in ("turned", "alpha", "day 2/big")}
    assert sizes == {"turned": (40, 60), "alpha": (30, 50), "day 2/big": (4000, 3000)}  # (width, height)
    failed = (out / "failed.csv").read_text().splitlines()
    assert failed[0] == "photo,reason" and len(failed) == 2 and failed[1].startswith(f"{folder / 'broken.jpg'},corrupt image")
    assert f"warning: segment: {folder / 'broken.jpg'}: corrupt image" in proc.stderr  # shown at the end of the run
    rows = (out / "classes.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["alpha", "day 2/big", "turned"]
    made = {i: (out / f"masks/{i}.png").stat().st_mtime_ns for i in ("turned", "alpha", "day 2/big")}
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(folder / "added.png")
    snakemake(workdir, "--cores", "2", *args)
    log = (custom_run / "logs/segment/segment.log").read_text()
    # the added photo, and the unreadable one tried again (it may have been fixed); the others as they were
    assert "segment: 3 of 5 photos as segmented before (same photo, model and settings); segmenting 2" in log
    assert {i: (out / f"masks/{i}.png").stat().st_mtime_ns for i in made} == made
    assert (out / "masks/added.png").exists() and len((out / "classes.csv").read_text().splitlines()) == 5


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_the_segmented_folders_page_renders_each_photo_and_the_failed_one(holiday, tmp_path):
    """The folder's page as a browser renders it: a row for each photo segmented, one for the photo that failed."""
    _, out, _, _ = holiday
    photos = len((out / "classes.csv").read_text().splitlines()) - 1
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=5000", "--dump-dom",
                          (out / "index.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert photos >= 3 and dom.count("<tr class=\"photo\">") == photos and dom.count("class=\"failed\"") == 1
    assert 'src="./thumbs/overlays/day%202/big.jpg"' in dom
