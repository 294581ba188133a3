"""Dataset fingerprints: the file facts they are made of, and what changes them (rule fingerprint's digests)."""
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages import StageError
from stages.data import fingerprint as fp


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_digest_is_the_first_16_hex_digits_of_the_sha256_of_the_sorted_json():
    expected = hashlib.sha256(b'{"a": [2, "x"], "b": 1}').hexdigest()[:16]
    assert fp.digest({"b": 1, "a": [2, Path("x")]}) == expected  # keys sorted, a path as its string


def test_stat_identity_and_sha256_of_a_file_and_of_a_missing_one(tmp_path):
    path = written(tmp_path / "f.bin", b"12345")
    os.utime(path, ns=(1_000_000_000, 2_000_000_007))
    st = os.stat(path)
    assert fp.stat(path) == [5, 2_000_000_007]
    assert fp.identity(path) == [5, 2_000_000_007, st.st_ctime_ns]
    assert fp.sha256(path) == hashlib.sha256(b"12345").hexdigest()
    assert fp.stat(tmp_path / "missing") is None and fp.identity(tmp_path / "missing") is None


def test_a_record_is_the_identity_the_sha256_and_the_value_read(tmp_path):
    path = written(tmp_path / "f.bin", b"abc")
    assert fp.record(path, [1, 2]) == [*fp.identity(path), hashlib.sha256(b"abc").hexdigest(), [1, 2]]
    missing = tmp_path / "gone.png"
    with pytest.raises(StageError, match=f"^{re.escape(str(missing))}: removed while the dataset was being read; rerun"):
        fp.record(missing, None)


def test_records_are_read_from_the_index_and_are_empty_without_a_readable_one(tmp_path):
    index = tmp_path / "image_labels.json"
    index.write_text(json.dumps({"records": {"a": [1, 2, 3, "h", [4]]}, "other": 1}))
    assert fp.read_records(index) == {"a": [1, 2, 3, "h", [4]]}
    assert fp.read_records(tmp_path / "missing.json") == {}
    assert fp.read_records(written(tmp_path / "bad.json", b"{not json")) == {}
    assert fp.read_records(written(tmp_path / "list.json", b"[1, 2]")) == {}  # no .get: not an index
    assert fp.read_records(written(tmp_path / "none.json", b"{}")) == {}


def test_a_record_answers_only_while_the_files_identity_is_unchanged(tmp_path):
    path = written(tmp_path / "mask.png", b"first")
    calls = []

    def decode(p):
        calls.append(p)
        return ["decoded", p.read_bytes().decode()]

    records = {str(path): [*fp.identity(path), "recorded-sha", ["recorded"]]}
    assert fp.cached(path, records, decode) == ["recorded"] and calls == []
    assert fp.content(path, records) == "recorded-sha"
    # a record of another length, or of another identity, is not used
    for stale in ([*fp.identity(path), ["recorded"]], [0, *fp.identity(path)[1:], "recorded-sha", ["recorded"]]):
        assert fp.cached(path, {str(path): stale}, decode) == ["decoded", "first"]
        assert fp.content(path, {str(path): stale}) == hashlib.sha256(b"first").hexdigest()
    assert calls == [path, path]
    # rewritten (same size): the identity moves on, the file is read again
    written(path, b"secnd")
    assert fp.cached(path, records, decode) == ["decoded", "secnd"]
    assert fp.content(path, records) == hashlib.sha256(b"secnd").hexdigest()


def test_cached_and_content_of_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "missing.png"
    assert fp.cached(missing, {}, lambda p: 1 / 0) is None and fp.content(missing, {}) is None
    broken = written(tmp_path / "broken.png", b"not a png")
    assert fp.cached(broken, {}, lambda p: 1 / 0) == ["unreadable", fp.stat(broken)]


def test_header_size_is_height_width_with_a_quarter_turn_applied(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (5, 3)).save(path)
    assert fp.header_size(path) == [3, 5]
    for orientation, size in [(1, [3, 5]), (3, [3, 5]), (5, [5, 3]), (6, [5, 3]), (7, [5, 3]), (8, [5, 3])]:
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.new("RGB", (5, 3)).save(path, exif=exif)
        assert fp.header_size(path) == size, orientation


def test_files_fingerprint_follows_the_bytes_of_the_images_and_masks_of_its_split(tiny_voc, tmp_path):
    import shutil

    from conftest import layout_of

    root = tmp_path / "VOC2012"
    shutil.copytree(tiny_voc, root)
    layout = layout_of(root)
    ids = layout.ids("train")
    before = {a: fp.files_fingerprint(layout, "train", a) for a in fp.ASPECTS}
    assert len(set(before.values())) == 2 and before["images"] != fp.files_fingerprint(layout, "val", "images")
    mask = layout.mask_path(ids[0])
    image = next(iter(fp.find_images(layout.images)[ids[0]]))
    os.utime(mask, ns=(1, 1))  # touched: the same bytes
    os.utime(image, ns=(1, 1))
    assert {a: fp.files_fingerprint(layout, "train", a) for a in fp.ASPECTS} == before
    labels = np.array(Image.open(mask))
    labels[0, 0] = 255 if labels[0, 0] != 255 else 0
    Image.fromarray(labels, mode="P").save(mask)  # other bytes
    assert fp.files_fingerprint(layout, "train", "masks") != before["masks"]
    assert fp.files_fingerprint(layout, "train", "images") == before["images"]
    image.write_bytes(image.read_bytes() + b"\0")
    assert fp.files_fingerprint(layout, "train", "images") != before["images"]


def voc_copy(tiny_voc, tmp_path) -> Path:
    import shutil

    root = tmp_path / "VOC2012"
    shutil.copytree(tiny_voc, root)
    return root


def test_the_index_fingerprint_follows_the_classes_sizes_and_lists_not_the_pixels(tiny_voc, tmp_path):
    from conftest import layout_of

    root = voc_copy(tiny_voc, tmp_path)
    layout = layout_of(root)
    before = fp.index_fingerprint(layout)
    assert fp.index_fingerprint(layout, images=fp.find_images(layout.images)) == before
    first = layout.ids("train")[0]
    mask = layout.mask_path(first)
    labels = np.array(Image.open(mask))
    edited = labels.copy()
    edited[labels == labels.max()] = 0 if labels.max() == 255 else labels.max()  # the same classes
    edited[0, 0] = labels[0, 0]
    Image.fromarray(edited).save(mask)
    assert fp.index_fingerprint(layout) == before
    Image.fromarray(np.zeros_like(labels)).save(mask)  # background alone: the image's classes change
    assert fp.index_fingerprint(layout) != before
    Image.fromarray(labels).save(mask)
    assert fp.index_fingerprint(layout) == before
    image = next(iter(fp.find_images(layout.images)[first]))
    Image.new("RGB", (64, 64), (9, 9, 9)).save(image)  # other pixels, the same size
    assert fp.index_fingerprint(layout) == before
    Image.new("RGB", (64, 48)).save(image)  # another size
    resized = fp.index_fingerprint(layout)
    assert resized != before
    train = layout.split_file("train")
    listed = train.read_text()
    train.write_text(listed.replace(f"{first}\n", ""))  # one id fewer
    assert fp.index_fingerprint(layout) not in (before, resized)
    train.unlink()  # an unreadable list is a state of its own, until the list is back
    gone = fp.index_fingerprint(layout)
    assert gone not in (before, resized) and fp.index_fingerprint(layout) == gone
    train.write_text(listed)
    assert fp.index_fingerprint(layout) == resized


def test_the_index_fingerprint_reads_recorded_values_while_the_files_are_unchanged(tiny_voc, tmp_path):
    from conftest import layout_of

    root = voc_copy(tiny_voc, tmp_path)
    layout = layout_of(root)
    first = layout.ids("train")[0]
    image = next(iter(fp.find_images(layout.images)[first]))
    index = tmp_path / "image_labels.json"
    before = fp.index_fingerprint(layout, index)  # no index yet: every file is read
    # what image_labels recorded is used as recorded: a record of another size stands for the image's
    index.write_text(json.dumps({"records": {str(image): fp.record(image, [48, 64])}}))  # [height, width]
    recorded = fp.index_fingerprint(layout, index)
    assert recorded != before
    Image.new("RGB", (64, 48)).save(image)  # the file catches up with its record
    assert fp.index_fingerprint(layout) == recorded


def test_generated_data_is_fingerprinted_by_its_settings(tiny_voc, tmp_path):
    from conftest import TINY, layout_of

    root = voc_copy(tiny_voc, tmp_path)
    layout, other = layout_of(root, generate=dict(TINY)), layout_of(root, generate={**TINY, "max_objects": 3})
    assert fp.index_fingerprint(layout) != fp.index_fingerprint(other)
    prints = {(s, a): fp.files_fingerprint(layout, s, a) for s in ("train", "val") for a in fp.ASPECTS}
    assert len(set(prints.values())) == 4
    assert fp.files_fingerprint(other, "train", "images") != prints["train", "images"]
    (root / "JPEGImages" / f"{layout.ids('train')[0]}.jpg").unlink()  # what make_dataset writes is not read
    assert fp.index_fingerprint(layout) == fp.index_fingerprint(layout_of(root, generate=dict(TINY)))
    assert fp.files_fingerprint(layout, "train", "images") == prints["train", "images"]


def test_files_fingerprints_use_recorded_hashes_and_name_an_unreadable_list(tiny_voc, tmp_path):
    from conftest import layout_of

    root = voc_copy(tiny_voc, tmp_path)
    layout = layout_of(root)
    first = layout.ids("train")[0]
    mask = layout.mask_path(first)
    before = fp.files_fingerprint(layout, "train", "masks")
    # a record whose identity still matches is trusted: its hash stands for the file's
    stale = {str(mask): [*fp.identity(mask), "0" * 64, [1]]}
    assert fp.files_fingerprint(layout, "train", "masks", records=stale) != before
    assert fp.files_fingerprint(layout, "train", "masks", records={str(mask): fp.record(mask, [1])}) == before
    image = next(iter(fp.find_images(layout.images)[first]))
    images = fp.files_fingerprint(layout, "train", "images")
    assert fp.files_fingerprint(layout, "train", "images", records={str(image): [*fp.identity(image), "0" * 64, 1]}) \
        != images
    layout.split_file("train").unlink()
    unreadable = fp.files_fingerprint(layout, "train", "masks")
    assert unreadable != before and fp.files_fingerprint(layout, "val", "masks") != unreadable
    # without a list every image of the folder counts (COCO's images are listed by the instances files)
    found = fp.find_images(layout.images)
    expected = [[i, [[str(p), fp.sha256(p)] for p in found[i]]] for i in sorted(found)]
    assert fp.files_fingerprint(layout, "train", "images") == fp.digest(["train", "images", expected])


@pytest.mark.parametrize("source", ["tags", "xml"])
def test_tags_and_xml_labels_and_the_masks_they_are_compared_with_are_fingerprinted(own_dataset, tiny_voc, tmp_path,
                                                                                    source):
    from conftest import CLASSES, layout_of

    root, classes = own_dataset(tiny_voc, tmp_path)
    extra = next(c for k, c in enumerate(CLASSES, 1) if k not in classes["syn 000003"])  # a class the image lacks
    data = {"labels": source, "tags": str(root / "tags.csv"), "annotations": "Annotations", "image_dir": "images",
            "mask_dir": "masks", "lists": {"train": str(root / "train.txt"), "val": str(root / "val.txt")}}
    layout = layout_of(root, mask_splits=["train"], **data)
    before = fp.index_fingerprint(layout)
    labels = fp.image_labels_of(layout, ["syn 000003"], {})
    assert labels == [["syn 000003", classes["syn 000003"]]]
    if source == "tags":
        tags = root / "tags.csv"
        text = tags.read_text()
        tags.write_text(text.replace("syn 000003,", f"syn 000003,{extra} "))
        assert fp.index_fingerprint(layout) != before
        tags.write_text("id,labels\nsyn 000003,no-such-class\n")  # unreadable: the file's facts stand for it
        assert fp.image_labels_of(layout, ["syn 000003"], {}) == [["tags", fp.stat(tags)]]
        tags.write_text(text)
    else:
        xml = layout.annotation_path("syn 000003")
        xml.write_text(xml.read_text().replace("<annotation>", f"<annotation><object><name>{extra}</name>"
                                               "<difficult>0</difficult></object>"))
        assert fp.index_fingerprint(layout) != before
        xml.write_text("<annotation")  # unreadable
        assert fp.image_labels_of(layout, ["syn 000003"], {}) == [["syn 000003", ["unreadable", fp.stat(xml)]]]
    layout = layout_of(root, mask_splits=["train"], **data)
    restored = fp.index_fingerprint(layout)
    # a train mask is compared with the labels: its classes count; a val mask is not scored here: it does not
    mask = layout.mask_path("syn 000003")
    kept = mask.read_bytes()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask)
    assert fp.index_fingerprint(layout) != restored
    mask.write_bytes(kept)
    val_mask = layout.mask_path(layout.ids("val")[0])
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(val_mask)
    assert fp.index_fingerprint(layout) == restored


def test_coco_masks_and_index_are_the_instances_files(tiny_voc, tmp_path):
    import dataclasses

    from conftest import layout_of

    layout = layout_of(voc_copy(tiny_voc, tmp_path))
    instances = {s: written(tmp_path / f"instances_{s}2014.json", b"{}") for s in ("val", "train")}
    coco = dataclasses.replace(layout, coco=instances)
    sources = [[str(p), fp.stat(p)] for p in sorted(instances.values())]
    assert fp.files_fingerprint(coco, "train", "masks") == fp.digest(["train", "masks", sources])
    assert fp.files_fingerprint(coco, "train", "images") == fp.files_fingerprint(layout, "train", "images")
    found = fp.find_images(layout.images)
    files = {i: [[p.relative_to(layout.root).as_posix(), fp.header_size(p)] for p in paths] for i, paths in found.items()}
    assert fp.index_fingerprint(coco) == fp.digest([coco.to_json(), sources, sorted(files.items())])


def test_an_sbd_converted_mask_is_fingerprinted_by_its_mat_file(tiny_voc, tmp_path):
    import dataclasses

    from conftest import layout_of

    layout = layout_of(voc_copy(tiny_voc, tmp_path))
    first, second = layout.ids("train")[:2]
    layout.mask_path(first).unlink()  # convert_sbd writes this one from SBD's cls/<id>.mat
    sbd = tmp_path / "sbd"
    converted = dataclasses.replace(layout, sbd=sbd, sbd_masks_converted=True)
    mat = sbd / "cls" / f"{first}.mat"
    assert fp.sbd_source(converted, first) == [str(mat), None]
    mat.parent.mkdir(parents=True)
    written(mat, b"mat")
    assert fp.sbd_source(converted, first) == [str(mat), fp.stat(mat)]
    assert fp.sbd_source(converted, second) is None and fp.sbd_source(layout, first) is None  # VOC's own mask
    assert fp.mask_classes_of(converted, [first], {}) == [[first, [str(mat), fp.stat(mat)]]]
    before = fp.files_fingerprint(converted, "train", "masks")
    written(mat, b"other")
    os.utime(mat, ns=(7, 7))
    assert fp.files_fingerprint(converted, "train", "masks") != before


def test_an_images_fingerprint_reads_the_images_of_its_split_only(tiny_voc, tmp_path):
    from conftest import layout_of

    layout = layout_of(voc_copy(tiny_voc, tmp_path))
    before = fp.files_fingerprint(layout, "train", "images")
    found = fp.find_images(layout.images)
    assert fp.files_fingerprint(layout, "train", "images", images=found) == before
    image = found[layout.ids("val")[0]][0]
    image.write_bytes(image.read_bytes() + b"\0")  # a val image: not the train split's
    assert fp.files_fingerprint(layout, "train", "images") == before
    # an id the list names without an image counts as one without files
    layout.split_file("train").write_text(layout.split_file("train").read_text() + "no_such_image\n")
    assert fp.files_fingerprint(layout, "train", "images") == fp.digest(["train", "images", [
        [i, [[str(p), fp.sha256(p)] for p in found.get(i, [])]] for i in layout.ids("train")]])


def test_a_split_after_an_unreadable_list_still_counts_and_a_test_split_has_no_labels(tiny_voc, tmp_path):
    from conftest import layout_of

    root = voc_copy(tiny_voc, tmp_path)
    layout = layout_of(root)
    layout.split_file("train").unlink()
    before = fp.index_fingerprint(layout)
    val_mask = layout.mask_path(layout.ids("val")[0])
    kept = val_mask.read_bytes()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(val_mask)  # val's classes change after train's missing list
    assert fp.index_fingerprint(layout) != before
    val_mask.write_bytes(kept)
    # a split predicted only (a test split) lists images without labels: its masks, if any, are not read
    predicted = layout_of(root, splits=("train",), test_split="val")
    (root / "ImageSets/Segmentation/train.txt").write_text((tiny_voc / "ImageSets/Segmentation/train.txt").read_text())
    unlabeled = fp.index_fingerprint(predicted)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(val_mask)
    assert fp.index_fingerprint(predicted) == unlabeled


def test_an_unreadable_list_is_fingerprinted_by_the_lists_names_and_facts(tiny_voc, tmp_path):
    from conftest import layout_of

    root = voc_copy(tiny_voc, tmp_path)
    (root / "ImageSets/Segmentation/train.txt").unlink()
    layout = layout_of(root)
    missing = {"index": fp.index_fingerprint(layout), "masks": fp.files_fingerprint(layout, "train", "masks")}
    empty = root / "ImageSets/Segmentation/train.txt"
    empty.write_text("")  # still unreadable (no id), but there now
    assert fp.index_fingerprint(layout) != missing["index"]
    assert fp.files_fingerprint(layout, "train", "masks") != missing["masks"]
    empty.unlink()
    # the same facts (missing) of a list configured elsewhere: another list, another fingerprint
    elsewhere = layout_of(root, lists={"train": str(tmp_path / "mine.txt")})
    assert fp.files_fingerprint(elsewhere, "train", "masks") != missing["masks"]
