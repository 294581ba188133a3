"""Rule segment and its command line: a folder of new photos segmented as the run predicts its own splits, and
nothing of the user's lost, nothing stale served, whatever the photos are called."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from stages import StageError
from stages.core.gallery import class_fractions
from stages.core.runtime import make_runtime
from stages.data.photos import find_photos
from stages.models.classifier import CAMClassifier
from stages.models.segmentation import create_deeplab
from stages.predict_segmentation import predict_segmentation
from stages.segment import segment_photos, standalone
from stages.utils.io import read_label_png, save_model

CFG = {"scales": [1.0, 0.5], "flip": True,
       "crf": {"iterations": 1, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3},
               "bilateral": {"sxy": 80, "srgb": 13, "compat": 10}}}


@pytest.fixture(scope="module")
def models(tiny_index, tmp_path_factory):
    """A DeepLabv3+ and a classifier as the trainers save them (untrained weights: the inference is what counts)."""
    folder = tmp_path_factory.mktemp("models")
    seg_cfg = {"encoder": "resnet18", "decoder_channels": 32, "aspp_rates": [6, 12, 18], "aspp_separable": False,
               "frozen_bn": False, "pretrained": False, "pretrained_path": None}
    model = create_deeplab("resnet18", 5, 32, aspp_rates=(6, 12, 18), aspp_separable=False, frozen_bn=False)
    save_model(folder / "seg/model.pt", model.state_dict(),
               {"stage": "train_segmentation", "encoder": "resnet18", "classes": tiny_index.classes, "config": seg_cfg})
    cls_cfg = {"backbone": "resnet18", "pretrained": False, "pretrained_path": None}
    save_model(folder / "cls/model.pt", CAMClassifier("resnet18", 4).state_dict(),
               {"stage": "train_classifier", "backbone": "resnet18", "classes": tiny_index.classes, "config": cls_cfg})
    return folder / "seg/model.pt", folder / "cls/model.pt"


def test_a_folder_of_photos_is_segmented_as_the_split_is_predicted(tiny_index, models, tmp_path):
    """The val images renamed and re-encoded as PNG (in the split's order): the same masks, pixel for pixel."""
    model, _ = models
    rt = make_runtime("cpu", precision="fp32")
    ids = tiny_index.ids(tiny_index.layout.split_file("val"))
    predict_segmentation(tiny_index, ids, model, CFG, rt, tmp_path / "pred", processes=2)
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, image_id in enumerate(ids):
        Image.fromarray(tiny_index.read_image(image_id)).save(folder / f"photo_{k:02d}.png")
    rows = segment_photos(find_photos([folder])[0], model, CFG, rt, tmp_path / "out", processes=2)
    assert [r["id"] for r in rows] == [f"photo_{k:02d}" for k in range(len(ids))]
    for k, image_id in enumerate(ids):
        mask = read_label_png(tmp_path / f"out/masks/photo_{k:02d}.png")
        np.testing.assert_array_equal(mask, read_label_png(tmp_path / "pred" / f"{image_id}.png"))
        assert rows[k]["fractions"] == class_fractions(mask, 5) and rows[k]["size"] == [64, 64]
        with Image.open(tmp_path / f"out/overlays/photo_{k:02d}.jpg") as overlay:
            assert overlay.size[0] == 64 and overlay.size[1] > 64  # the photo, and its legend below
    lines = (tmp_path / "out/classes.csv").read_text().splitlines()
    assert lines[0] == "id,height,width,background,disc,square,triangle,cross" and len(lines) == 1 + len(ids)
    assert (tmp_path / "out/failed.csv").read_text() == "photo,reason\n"
    assert (tmp_path / "out/index.html").read_text().count("<tr class='photo'>") == len(ids)


def test_the_command_line_segments_photos_and_draws_the_classifiers_cams(models, tiny_voc, tmp_path):
    """python -m stages.segment on an installed package, no Snakemake: files and folders, and --classifier."""
    model, classifier = models
    photo = next((tiny_voc / "JPEGImages").glob("*.jpg"))
    proc = subprocess.run([sys.executable, "-m", "stages.segment", "--model", str(model), str(photo), "--out",
                           str(tmp_path / "out"), "--scales", "1.0", "--crf-iterations", "0", "--device", "cpu",
                           "--classifier", str(classifier), "--threads", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert read_label_png(tmp_path / f"out/masks/{photo.stem}.png").shape == (64, 64)
    with Image.open(tmp_path / f"out/cams/{photo.stem}.jpg") as cams:  # one panel per predicted tag, titled
        assert cams.size[0] % 64 == 0 and cams.size[1] == 64 + 24
    proc = subprocess.run([sys.executable, "-m", "stages.segment", "--model", str(model), str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nowhere'}: no such photo or folder"


NO_CRF = {**CFG, "crf": {**CFG["crf"], "iterations": 0}}


def listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def bmp_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Photos whose byte size depends on their pixel size only (BMP), so that one can be replaced by another of
    the same size."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        pixels = np.zeros((48, 64, 3), np.uint8)
        pixels[8 + 4 * k: 40, 8: 24 + 8 * k] = rng.integers(0, 255, 3)
        Image.fromarray(pixels).save(folder / f"p{k}.bmp")
        paths.append(folder / f"p{k}.bmp")
    return paths


def segment_cli(model, *args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "stages.segment", "--model", str(model), *map(str, args),
                           "--scales", "1.0", "--crf-iterations", "0", "--device", "cpu", "--threads", "1"],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("where", ["the photos' folder", "inside it", "around it", "the working folder",
                                   "a folder of the user's"])
def test_an_output_folder_that_could_lose_a_file_of_the_users_is_refused_and_nothing_is_removed(
        models, tmp_path, monkeypatch, where):
    """--out on the photos, inside them, around them, '.', or a folder holding other files: one line, and every
    file as it was (the output folder was removed whole before, photos and all)."""
    model, _ = models
    photos = tmp_path / "work/photos"
    bmp_photos(photos, 2)
    (tmp_path / "work/notes.txt").write_text("mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/letter.txt").write_text("mine too")
    out = {"the photos' folder": photos, "inside it": photos / "out", "around it": tmp_path / "work",
           "the working folder": Path("."), "a folder of the user's": tmp_path / "mine"}[where]
    before = listing(tmp_path)
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(StageError, match="the output folder (is|lies inside|holds) the photos'|did not write") as e:
        standalone(["--model", str(model), str(photos), "--out", str(out), "--device", "cpu", "--threads", "1"])
    assert "\n" not in str(e.value)
    assert listing(tmp_path) == before


def test_the_command_line_refuses_the_working_folder_in_one_line(models, tmp_path):
    model, _ = models
    bmp_photos(tmp_path / "photos", 1)
    proc = segment_cli(model, "photos", "--out", ".", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: .: the output folder holds the photos' photos; give a folder of its own")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_segmenting_again_into_its_own_output_replaces_it_and_a_file_added_there_stops_it(models, tmp_path):
    model, _ = models
    bmp_photos(tmp_path / "photos", 2)
    rt = make_runtime("cpu", precision="fp32")
    out = tmp_path / "out"
    segment_photos(*find_photos([tmp_path / "photos"])[:1], model, NO_CRF, rt, out, processes=1)
    segment_photos(*find_photos([tmp_path / "photos"])[:1], model, NO_CRF, rt, out, processes=1)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["p0.png", "p1.png"]
    (out / "my notes.txt").write_text("kept")
    with pytest.raises(StageError, match="holds files segment did not write .first: .*my notes.txt"):
        segment_photos(*find_photos([tmp_path / "photos"])[:1], model, NO_CRF, rt, out, processes=1)
    assert (out / "my notes.txt").read_text() == "kept"


def test_a_photo_replaced_by_another_of_the_same_size_and_time_is_segmented_again(models, tmp_path):
    """``cp -p`` of another photo onto one already segmented: same byte size, same mtime; its mask must be the
    new photo's (the cache keyed on size and mtime kept the old one)."""
    model, _ = models
    rt = make_runtime("cpu", precision="fp32")
    first, second = bmp_photos(tmp_path / "photos", 2)
    out = tmp_path / "out"
    segment_photos(find_photos([tmp_path / "photos"])[0], model, NO_CRF, rt, out, processes=1)
    st = first.stat()
    first.write_bytes(second.read_bytes())
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert [first.stat().st_size, first.stat().st_mtime_ns] == [st.st_size, st.st_mtime_ns]
    segment_photos(find_photos([tmp_path / "photos"])[0], model, NO_CRF, rt, out, processes=1)
    np.testing.assert_array_equal(read_label_png(out / "masks/p0.png"), read_label_png(out / "masks/p1.png"))
    fresh = tmp_path / "fresh"
    segment_photos(find_photos([tmp_path / "photos"])[0], model, NO_CRF, rt, fresh, processes=1)
    assert listing(out / "masks") == listing(fresh / "masks")


def test_the_plan_of_a_folder_of_photos_sees_a_photo_replaced_with_the_same_size_and_time(tmp_path):
    sys.path.insert(0, str(ROOT / "workflow" / "rules"))
    from pipeline.dataset import DatasetPlan

    first, second = bmp_photos(tmp_path / "photos", 2)
    name = lambda: DatasetPlan(None, "", "fp").photos(str(tmp_path / "photos"), str(tmp_path / ".out.cache"))  # noqa: E731
    before = name()
    st = first.stat()
    first.write_bytes(second.read_bytes())
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert name() != before


def test_every_photo_gets_its_own_results_whatever_its_name(models, tmp_path):
    """Names that met before: two formats of one name and a name with the other's extension in it (one was
    dropped), a photo named like another's overlay or thumbnail (SameFileError), a name that is not UTF-8
    (UnicodeEncodeError), links that lead nowhere (skipped without a word)."""
    model, _ = models
    folder = tmp_path / "photos"
    made = bmp_photos(tmp_path / "made", 6)
    names = ["a.jpg", "a.png", "a.jpg.png", "foo.jpg", "foo.overlay.png", "x.jpg", "thumbs/x.jpg"]
    for k, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.open(made[k % len(made)]).save(folder / name)
    latin = os.fsdecode(b"\xe9t\xe9.png")
    Image.open(made[0]).save(folder / latin)
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    photos, failed = find_photos([folder])
    assert len(photos) == len(names) + 1
    rows = segment_photos(photos, model, NO_CRF, make_runtime("cpu", precision="fp32"), tmp_path / "out",
                          processes=1, failed=failed, sources=[folder])
    assert len(rows) == len(names) + 1
    masks = {p.relative_to(tmp_path / "out/masks") for p in (tmp_path / "out/masks").rglob("*.png")}
    assert len(masks) == len(names) + 1 and Path(latin) in masks  # the id of "\xe9t\xe9.png" is "\xe9t\xe9"
    with open(tmp_path / "out/failed.csv", newline="") as f:
        reasons = {Path(r["photo"]).name: r["reason"] for r in csv.DictReader(f)}
    assert set(reasons) == {"gone.jpg", "loop.jpg"} and all("link" in r for r in reasons.values())
    with open(tmp_path / "out/classes.csv", newline="", encoding="utf-8") as f:
        assert "\\xe9t\\xe9" in {r["id"] for r in csv.DictReader(f)}
    again = segment_photos(photos, model, NO_CRF, make_runtime("cpu", precision="fp32"), tmp_path / "out",
                           processes=1, failed=failed, sources=[folder])  # its own output, names and all
    assert len(again) == len(rows)


def test_links_in_the_page_are_relative_encoded_urls_and_csv_cells_never_start_a_formula(models, tmp_path):
    model, _ = models
    folder = tmp_path / "photos"
    made = bmp_photos(tmp_path / "made", 3)
    for k, name in enumerate(["javascript:alert(1).png", "a#b?c.png", "=HYPERLINK(1).png"]):
        Image.open(made[k]).save(folder / name) if folder.exists() else (folder.mkdir(), Image.open(made[k]).save(folder / name))
    segment_photos(find_photos([folder])[0], model, NO_CRF, make_runtime("cpu", precision="fp32"), tmp_path / "out",
                   processes=1)
    page = (tmp_path / "out/index.html").read_text()
    hrefs = [h.split("'")[0] for h in page.split("href='")[1:]] + [h.split("'")[0] for h in page.split("src='")[1:]]
    assert hrefs and all(h.startswith("./") and ":" not in h and "#" not in h and "?" not in h for h in hrefs)
    assert "./overlays/javascript%3Aalert%281%29.jpg" in hrefs and "./masks/a%23b%3Fc.png" in hrefs
    for h in hrefs:  # each link leads to its file
        from urllib.parse import unquote
        assert (tmp_path / "out" / unquote(h)).is_file(), h
    ids = [line.split(",")[0] for line in (tmp_path / "out/classes.csv").read_text().splitlines()[1:]]
    assert "'=HYPERLINK(1)" in ids and not any(i[:1] in "=+-@" for i in ids)


def test_a_large_photo_is_segmented_at_the_models_size_and_one_that_cannot_fit_is_listed(models, tmp_path, monkeypatch):
    """By default a photo is segmented at most at the longest side of the model's training images (model.json);
    where even that would not fit in the memory there is, the photo is listed with the reason, not a crash."""
    model, _ = models
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((600, 800, 3), 90, np.uint8)).save(folder / "big.png")
    meta = model.with_suffix(".json")
    import json
    saved = meta.read_text()
    try:
        meta.write_text(json.dumps({**json.loads(saved), "image_max_side": 64}))
        seen = []
        import stages.segment as segment_module
        real = segment_module.too_large
        monkeypatch.setattr(segment_module, "too_large", lambda size, *a: seen.append(size) or real(size, *a))
        rows = segment_photos(find_photos([folder])[0], model, NO_CRF, make_runtime("cpu", precision="fp32"),
                              tmp_path / "out", processes=1)
        assert seen[-1] == (48, 64) and max(map(max, seen)) == 64 and rows[0]["size"] == [600, 800]
        assert read_label_png(tmp_path / "out/masks/big.png").shape == (600, 800)
        monkeypatch.setattr("psutil.virtual_memory", lambda: type("M", (), {"available": 1 << 20})())
        segment_photos(find_photos([folder])[0], model, NO_CRF, make_runtime("cpu", precision="fp32"),
                       tmp_path / "out2", processes=1, max_side=512)
        failed = (tmp_path / "out2/failed.csv").read_text().splitlines()
        assert len(failed) == 2 and "GiB of memory" in failed[1] and "--max-side" in failed[1]
    finally:
        meta.write_text(saved)
