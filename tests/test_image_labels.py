"""Image-level labels from masks, tags or XML; images as users have them; clear errors on bad datasets."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASSES, layout_of, run_stage
from PIL import Image

from stages import StageError
from stages.convert_sbd import read_sbd_mask
from stages.core.metrics import score_label_maps
from stages.data.index import load_index
from stages.data.labels import xml_label_names
from stages.data.voc import MODE_READERS, TRANSPARENT, VOC_CLASSES, capped_size, read_ids, read_image, read_mask
from stages.image_labels import build_index, image_size
from stages.utils.io import save_label_png, write_json


def test_labels_are_the_classes_in_each_mask(tiny_index):
    for image_id, labels in tiny_index.labels.items():
        mask = read_mask(tiny_index.layout.mask_path(image_id))
        assert labels == sorted(int(c) for c in np.unique(mask) if 0 < c < 255)


@pytest.fixture
def broken(tiny_voc, tmp_path):
    root = tmp_path / "VOC2012"
    shutil.copytree(tiny_voc, root)
    return root


def test_missing_root(tmp_path):
    with pytest.raises(StageError, match="JPEGImages: missing folder"):
        build_index(layout_of(tmp_path / "nowhere", splits=["train"]))


def test_corrupt_jpeg_is_named(broken):
    image_id = (broken / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    (broken / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(StageError, match=f"{image_id}.jpg: corrupt image"):
        build_index(layout_of(broken, splits=["train"]))


def test_listed_id_without_image(broken):
    with open(broken / "ImageSets/Segmentation/train.txt", "a") as f:
        f.write("ghost\n")
    with pytest.raises(StageError, match="train.txt: id 'ghost' has no image in .*JPEGImages"):
        build_index(layout_of(broken, splits=["train"]))


def test_mask_of_the_wrong_size(broken):
    image_id = (broken / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    save_label_png(broken / "SegmentationClass" / f"{image_id}.png", np.zeros((10, 12), np.uint8))
    with pytest.raises(StageError, match=f"{image_id}.png: mask is 12x10 but its image is 64x64"):
        build_index(layout_of(broken, splits=["val"]))


def test_label_values_out_of_range(broken):
    image_id = (broken / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    save_label_png(broken / "SegmentationClass" / f"{image_id}.png", np.full((64, 64), 9, np.uint8))
    with pytest.raises(StageError, match=r"label values \[9\] outside 0..4 and 255"):
        build_index(layout_of(broken, splits=["val"]))


# The VOC 2012 + SBD layout: SegmentationClassAug for train_aug, a mask-less test split.
@pytest.fixture
def voc(make_voc_fixture, tmp_path):

    ids = make_voc_fixture(tmp_path)
    voc_root = tmp_path / "VOCdevkit/VOC2012"
    aug = voc_root / "SegmentationClassAug"
    for mat in (tmp_path / "benchmark_RELEASE/dataset/cls").glob("*.mat"):
        save_label_png(aug / f"{mat.stem}.png", read_sbd_mask(mat))
    return voc_root, ids, {"train_aug": str(tmp_path / "train_aug.txt")}


def voc_layout(root, splits, **data):
    return layout_of(root, VOC_CLASSES, splits, **data)


def test_voc_masks_win_and_sbd_masks_fill_in(voc):
    root, ids, lists = voc
    index, split_ids = build_index(voc_layout(root, ["train_aug", "val"], test_split="test", lists=lists))
    assert split_ids["train_aug"] == ids["train_aug"] and split_ids["test"] == ids["test"]
    assert index.layout.mask_path(ids["train"][0]) == root / "SegmentationClass" / f"{ids['train'][0]}.png"
    assert index.layout.mask_path(ids["sbd"][0]) == root / "SegmentationClassAug" / f"{ids['sbd'][0]}.png"
    for image_id in ids["sbd"]:
        mask = read_mask(root / "SegmentationClassAug" / f"{image_id}.png")
        assert index.labels[image_id] == sorted(int(c) for c in np.unique(mask) if 0 < c < 255)
    assert index.unlabeled == frozenset(ids["test"]) and not set(ids["test"]) & index.labels.keys()


def test_index_round_trips_and_accepts_the_test_ids(voc, tmp_path):
    root, ids, lists = voc
    index, _ = build_index(voc_layout(root, ["train_aug"], test_split="test", lists=lists))
    write_json(tmp_path / "image_labels.json", index.to_json())
    (tmp_path / "test.txt").write_text("\n".join(ids["test"]) + "\n")
    loaded = load_index(tmp_path / "image_labels.json")
    assert loaded.ids(tmp_path / "test.txt") == ids["test"]
    assert loaded.layout.mask_path(ids["sbd"][1]) == index.layout.mask_path(ids["sbd"][1])


def test_missing_train_aug_list_is_named(voc, tmp_path):
    root, _, _ = voc
    with pytest.raises(StageError, match=f"{tmp_path / 'elsewhere.txt'}: split list not found"):
        build_index(voc_layout(root, ["train_aug"], lists={"train_aug": str(tmp_path / "elsewhere.txt")}))


def test_missing_aug_folder_is_named(voc, tmp_path):
    root, _, lists = voc
    with pytest.raises(StageError, match=f"{tmp_path / 'Aug'}: missing folder of SBD-converted masks"):
        build_index(voc_layout(root, ["train_aug"], aug_masks=str(tmp_path / "Aug"), lists=lists))


def test_id_with_no_mask_anywhere_is_named(voc):
    root, ids, lists = voc
    (root / "SegmentationClassAug" / f"{ids['sbd'][2]}.png").unlink()
    with pytest.raises(StageError, match=f"SegmentationClassAug/{ids['sbd'][2]}.png: file not found"):
        build_index(voc_layout(root, ["train_aug"], lists=lists))


def test_test_id_without_image_is_named(voc):
    root, ids, lists = voc
    (root / "JPEGImages" / f"{ids['test'][1]}.jpg").unlink()
    with pytest.raises(StageError, match=f"test.txt: id '{ids['test'][1]}' has no image in {root / 'JPEGImages'}"):
        build_index(voc_layout(root, ["val"], test_split="test"))


def test_truncated_jpeg_is_named(voc):
    root, ids, _ = voc
    path = root / "JPEGImages" / f"{ids['val'][0]}.jpg"
    path.write_bytes(path.read_bytes()[:200])  # a valid header, the pixels cut off
    with pytest.raises(StageError, match=f"{ids['val'][0]}.jpg: corrupt image"):
        build_index(voc_layout(root, ["val"]))


def test_stage_error_is_one_line_and_writes_nothing(voc, tmp_path):
    root, ids, _ = voc
    save_label_png(root / "SegmentationClass" / f"{ids['val'][1]}.png", np.full((64, 64), 21, np.uint8))
    data = {"root": str(root), "classes": list(VOC_CLASSES), "splits": ["val"], "train_split": "val", "cam_split": "val",
            "eval_split": "val", "test_split": "test", "labels": "masks", "image_dir": "JPEGImages",
            "mask_dir": "SegmentationClass"}
    proc = run_stage("image_labels", output={"labels": tmp_path / "labels/image_labels.json",
                                             "splits": [tmp_path / "labels/splits/val.txt", tmp_path / "labels/splits/test.txt"]},
                     params={"data": data, "data_root": None, "run": "voc"})
    assert proc.returncode == 2
    mask = root / "SegmentationClass" / f"{ids['val'][1]}.png"
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {mask}: ")
    assert not (tmp_path / "labels").exists()


# Lists as users write them: CRLF, blank lines, repeated ids, spaces and subfolders in ids.
def test_lists_read_crlf_blank_lines_spaces_subfolders_and_repeats_once(tmp_path, caplog):
    path = tmp_path / "train.txt"
    path.write_bytes(b"a\r\n\r\nsyn 000003\r\nstreet/0001\r\na\r\n  \r\nb\r\nb\r\n")
    assert read_ids(path) == ["a", "syn 000003", "street/0001", "b"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{path}: 2 repeated ids read once (first: 'a')"]


def test_path_pair_lines_give_the_id(tmp_path):
    path = tmp_path / "train_aug.txt"
    path.write_text("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n/JPEGImages/2008_000002.jpg\n")
    assert read_ids(path) == ["2007_000032", "2008_000002"]


def test_exif_orientation_is_applied_by_the_reader_and_the_size_check_alike(exif_jpeg, tmp_path):
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:20, :30] = [250, 0, 0]  # red in the stored top-left quadrant
    exif_jpeg(tmp_path / "rotated.jpg", pixels, orientation=6)  # 6: display rotated 90 degrees clockwise
    img = read_image(tmp_path / "rotated.jpg")
    assert img.shape == (60, 40, 3) and image_size(tmp_path / "rotated.jpg") == (60, 40)
    with Image.open(tmp_path / "rotated.jpg") as stored:  # the pixels as stored, decoded without the tag
        expected = np.rot90(np.array(stored.convert("RGB")), k=-1)  # clockwise: stored top-left goes top-right
    np.testing.assert_array_equal(img, expected)
    assert img[5, 35, 0] > 200 and img[5, 5, 0] < 40


@pytest.mark.parametrize("mode, ext", [("L", "png"), ("CMYK", "jpg"), ("RGBA", "png"), ("P", "png"), ("L", "jpeg")])
def test_any_mode_is_read_as_rgb(tmp_path, mode, ext):
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[:, 5:] = 200
    Image.fromarray(rgb).convert(mode, palette=Image.Palette.ADAPTIVE).save(tmp_path / f"x.{ext}")
    out = read_image(tmp_path / f"x.{ext}")
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    assert out[:, :4].max() < 30 and out[:, 6:].min() > 170


def grey(*values) -> np.ndarray:
    """The RGB row a grey image of ``values`` (uint8) reaches the network as."""
    return np.repeat(np.array([values], np.uint8)[..., None], 3, axis=2)


def test_16_bit_grey_is_scaled_not_clipped_to_white(tmp_path):
    """PIL's own conversion of mode I;16 clips every value above 255 to white."""
    Image.fromarray(np.array([[0, 257, 25700, 65535]], np.uint16)).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode == "I;16"
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), grey(0, 1, 100, 255))


def test_16_bit_rgb_keeps_its_colours(tmp_path):
    bgr = np.array([[[25700, 0, 51400], [65535, 65535, 0]]], np.uint16)  # as cv2 writes: blue, green, red
    cv2.imwrite(str(tmp_path / "rgb16.png"), bgr)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb16.png"), [[[200, 0, 100], [0, 255, 255]]])


def test_32_bit_images_are_scaled_or_refused(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), grey(0, 128, 255))
    Image.fromarray(np.array([[0, 65535]], np.int32)).save(tmp_path / "i.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "i.tif"), grey(0, 255))
    Image.fromarray(np.array([[0.0, 3.5]], np.float32)).save(tmp_path / "f3.tif")
    with pytest.raises(StageError, match=r"f3.tif: floating-point image with values outside \[0, 1\] \(0 to 3.5\)"):
        read_image(tmp_path / "f3.tif")
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "i2.tif")
    with pytest.raises(StageError, match=r"i2.tif: 32-bit integer image with values in \[0, 70000\]"):
        read_image(tmp_path / "i2.tif")


def test_one_bit_images_are_black_and_white(tmp_path):
    Image.fromarray(np.array([[False, True]])).save(tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as img:
        assert img.mode == "1"
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), grey(0, 255))


def test_transparent_pixels_take_imagenets_mean_colour(tmp_path):
    """Palette with transparency, RGBA and LA: what is under a transparent pixel is not part of the picture."""
    palette = Image.new("P", (2, 1))
    palette.putpalette([9, 9, 9, 250, 20, 30] + [0] * 762)
    palette.putdata([0, 1])
    palette.save(tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), [[TRANSPARENT, (250, 20, 30)]])
    Image.fromarray(np.array([[[255, 0, 0, 0], [10, 200, 30, 255]]], np.uint8), mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), [[TRANSPARENT, (10, 200, 30)]])
    Image.fromarray(np.array([[[77, 0], [77, 255]]], np.uint8), mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), [[TRANSPARENT, (77, 77, 77)]])


def test_colour_spaces_are_converted(tmp_path):
    Image.new("CMYK", (1, 1), (255, 0, 0, 0)).save(tmp_path / "c.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), [[(0, 255, 255)]])


def test_a_mode_without_a_reader_stops_in_one_line(tmp_path, monkeypatch):
    """Every mode PIL opens reaches the network with its content, or stops: none is converted blindly."""
    monkeypatch.delitem(MODE_READERS, "RGBA")
    Image.new("RGBA", (2, 2)).save(tmp_path / "x.png")
    with pytest.raises(StageError, match="x.png: image mode RGBA cannot be read faithfully; save it as 8-bit RGB"):
        read_image(tmp_path / "x.png")


def test_large_photos_are_capped_to_the_longest_side(tmp_path):
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(tmp_path / "big.png")
    assert capped_size((3000, 4000), 1000) == (750, 1000) and capped_size((300, 400), 1000) == (300, 400)
    assert read_image(tmp_path / "big.png", max_side=100).shape == (75, 100, 3)
    assert read_image(tmp_path / "big.png").shape == (300, 400, 3)


def own_index(root, **kw):
    data = {"labels": "tags", "tags": str(root / "tags.csv"), "mask_splits": [], "image_dir": "images", "mask_dir": "masks",
            "lists": {"train": str(root / "train.txt"), "val": str(root / "val.txt")}, **kw}
    return build_index(layout_of(root, **data))


@pytest.mark.parametrize("source", ["tags", "json", "xml"])
def test_tags_json_and_xml_give_the_masks_labels(own_dataset, tiny_voc, tmp_path, source):
    root, classes = own_dataset(tiny_voc, tmp_path)
    tags = root / "tags.csv"
    if source == "json":
        tags = root / "tags.json"
        tags.write_text(json.dumps({i: [CLASSES[c - 1] for c in cs] for i, cs in classes.items()}))
    index, split_ids = own_index(root, labels="xml" if source == "xml" else "tags", tags=str(tags), mask_splits=["train", "val"])
    assert index.labels == classes and split_ids["train"][:2] == ["syn 000003", "street/0001"]
    assert index.image_path("street/0001") == root / "images/street/0001.png"
    assert index.image_path("syn 000003") == root / "images/syn 000003.jpg"
    assert index.size("syn 000003") == (64, 64) and index.read_image("syn 000003").shape == (64, 64, 3)


def test_tags_that_disagree_with_the_masks_are_counted_where_the_masks_are_scored(own_dataset, tiny_voc, tmp_path):
    root, classes = own_dataset(tiny_voc, tmp_path)
    first = next(iter(classes))
    wrong = [c for c in CLASSES if CLASSES.index(c) + 1 not in classes[first]][0]
    lines = (root / "tags.csv").read_text().splitlines()
    lines[1] = f"{first},{wrong}"
    (root / "tags.csv").write_text("\n".join(lines) + "\n")
    index, split_ids = own_index(root, mask_splits=["train"])
    assert index.labels[first] == [CLASSES.index(wrong) + 1]
    scored = score_label_maps(index, split_ids["train"], root / "masks")  # the masks themselves, as predictions
    assert scored["miou"] == 100.0
    assert scored["label_disagreement"] == {"source": "tags", "images": 8, "disagree": 1, "first": first}


def test_index_without_masks_round_trips(own_dataset, tiny_voc, tmp_path):
    root, classes = own_dataset(tiny_voc, tmp_path)
    shutil.rmtree(root / "masks")
    index, _ = own_index(root, max_side=48)
    write_json(tmp_path / "image_labels.json", index.to_json())
    loaded = load_index(tmp_path / "image_labels.json")
    assert loaded.to_json() == index.to_json() and loaded.work_size("street/0001") == (48, 48)
    assert loaded.read_image("street/0001").shape == (48, 48, 3)


@pytest.mark.parametrize("row, message", [
    ("{first},disc zebra", r"tags.csv: line 2: 'zebra' is not a class of data.classes \(disc, square, triangle, cross\)"),
    ("{first},disc,square", r"tags.csv: line 2: malformed row '{first},disc,square' \(expected id,labels\)"),
    ("{first},", r"tags.csv: image '{first}' of the training split 'train' has no labels \(1 such\)"),
])
def test_bad_tags_rows_are_named_with_their_line(own_dataset, tiny_voc, tmp_path, row, message):
    root, classes = own_dataset(tiny_voc, tmp_path)
    first = next(iter(classes))
    lines = (root / "tags.csv").read_text().splitlines()
    lines[1] = row.format(first=first)
    (root / "tags.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(StageError, match=message.format(first=first)):
        own_index(root)


def test_untagged_id_and_id_without_image_are_named(own_dataset, tiny_voc, tmp_path):
    root, classes = own_dataset(tiny_voc, tmp_path)
    (root / "tags.csv").write_text("\n".join((root / "tags.csv").read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(StageError, match=f"tags.csv: no row for image '{list(classes)[-1]}'"):
        own_index(root)
    with open(root / "val.txt", "a") as f:
        f.write("holiday/IMG 0042\n")
    with pytest.raises(StageError, match=f"val.txt: id 'holiday/IMG 0042' has no image in {root / 'images'}"):
        own_index(root)


def test_an_image_in_a_non_training_split_may_have_no_tags(own_dataset, tiny_voc, tmp_path):
    root, classes = own_dataset(tiny_voc, tmp_path)
    last = list(classes)[-1]  # a val image
    lines = (root / "tags.csv").read_text().splitlines()
    assert lines[-1].startswith(f"{last},")
    (root / "tags.csv").write_text("\n".join([*lines[:-1], f"{last},"]) + "\n")
    index, _ = own_index(root)
    assert index.labels[last] == []


def test_train_aug_list_under_image_sets_is_found(voc, tmp_path):
    root, ids, lists = voc
    shutil.move(lists["train_aug"], root / "ImageSets/Segmentation/train_aug.txt")
    _, split_ids = build_index(voc_layout(root, ["train_aug"], lists=lists))
    assert split_ids["train_aug"] == ids["train_aug"]


def test_train_aug_is_derived_from_sbd_and_voc_lists_when_absent(voc, tmp_path):
    root, ids, lists = voc
    Path(lists["train_aug"]).unlink()
    sbd = tmp_path / "benchmark_RELEASE/dataset"
    # SBD's lists overlap VOC train and hold one VOC val image, which train_aug leaves out
    (sbd / "train.txt").write_text("\n".join(ids["sbd"][:4] + ids["train"][:2]) + "\n")
    (sbd / "val.txt").write_text("\n".join(ids["sbd"][4:] + [ids["val"][0]]) + "\n")
    _, split_ids = build_index(voc_layout(root, ["train_aug"], lists=lists, sbd=str(sbd),
                                          aug_masks=str(root / "SegmentationClassAug")))
    assert split_ids["train_aug"] == sorted(ids["train"] + ids["sbd"])


def test_an_id_with_two_image_files_is_named(own_dataset, tiny_voc, tmp_path):
    root, classes = own_dataset(tiny_voc, tmp_path)
    image = next((root / "images").glob("syn 000003.*"))
    Image.open(image).save(root / "images/syn 000003.webp")
    with pytest.raises(StageError, match=r"id 'syn 000003' has 2 images \(syn 000003.jpg, syn 000003.webp\); keep one"):
        own_index(root)


def test_xml_with_an_unknown_class_or_missing_is_named(own_dataset, tiny_voc, tmp_path):
    root, classes = own_dataset(tiny_voc, tmp_path)
    xml = root / "Annotations/street/0001.xml"
    xml.write_text("<annotation><object><name>zebra</name></object></annotation>")
    with pytest.raises(StageError, match=f"{xml}: 'zebra' is not a class of data.classes"):
        own_index(root, labels="xml")
    xml.unlink()
    with pytest.raises(StageError, match=f"{xml}: annotation not found"):
        own_index(root, labels="xml")


def test_xml_objects_whose_clipped_box_has_no_area_are_dropped_as_the_reference(tmp_path):
    # the reference clips each box to [0, size - 1] and drops an object whose box is then zero wide or high;
    # difficult objects and objects without a box are kept
    def obj(name, box=None, difficult=0):
        bnd = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box)) if box else ""
        return f"<object><name>{name}</name><difficult>{difficult}</difficult>{f'<bndbox>{bnd}</bndbox>' if bnd else ''}</object>"

    objects = [obj("dog", (3, 4, 20, 30)), obj("cat", (5, 5, 5, 30)), obj("bird", (2, 7, 9, 7)),
               obj("cow", (70, 2, 90, 20)), obj("horse", (10, 10, 12.0, 20), difficult=1), obj("sheep"),
               obj("boat", (-5, 3, 0, 9))]
    path = tmp_path / "a.xml"
    path.write_text(f"<annotation><size><width>64</width><height>48</height></size>{''.join(objects)}</annotation>")
    # cat: xmin == xmax; bird: ymin == ymax; cow: both x past the right edge, clipped to 63; boat: both x clipped to 0
    assert xml_label_names(path) == ["dog", "horse", "sheep"]


def test_the_fingerprint_of_a_splits_images_and_masks_follows_their_bytes_not_their_size_and_time(tiny_voc, tmp_path):
    """An image or a mask replaced by another of the same byte size and mtime (``cp -p``, a restore) changes the
    fingerprint that reruns the stages reading it; a file touched without a change of its bytes does not."""
    import os

    from stages.data.fingerprint import files_fingerprint

    root = tmp_path / "VOC2012"
    shutil.copytree(tiny_voc, root)
    layout = layout_of(root)
    index, ids = build_index(layout)
    fingerprint = lambda aspect: files_fingerprint(layout, "train", aspect, records=index.records)  # noqa: E731
    before = {a: fingerprint(a) for a in ("images", "masks")}
    image = index.image_path(ids["train"][0])
    os.utime(image, ns=(1, image.stat().st_mtime_ns + 10**9))
    assert {a: fingerprint(a) for a in ("images", "masks")} == before  # touched: same bytes
    for aspect, path, other in [("images", image, index.image_path(ids["train"][1])),
                                ("masks", index.mask_path(ids["train"][0]), index.mask_path(ids["train"][1]))]:
        st = path.stat()
        data = other.read_bytes()
        path.write_bytes(data[: st.st_size].ljust(st.st_size, b"\0"))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert fingerprint(aspect) != before[aspect]
