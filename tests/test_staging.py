"""Per-image stages: a killed job leaves no output folder, and its rerun computes only what is missing."""
import os
from pathlib import Path

import numpy as np
import pytest

import stages.make_cams as make_cams_module
from stages.make_cams import make_cams
from stages.models.classifier import CAMClassifier
from stages.utils.io import save_model, save_npz

CAMS = {"scales": [1.0], "flip": False}


class Killed(Exception):
    pass


@pytest.fixture
def model(tmp_path):
    cfg = {"backbone": "resnet18", "pretrained": False, "pretrained_path": None}
    save_model(tmp_path / "model.pt", CAMClassifier("resnet18", 4).state_dict(), {"config": cfg})
    return tmp_path / "model.pt"


def counting_saves(monkeypatch, kill_after=None):
    """Count make_cams' writes; raise Killed after ``kill_after`` of them."""
    calls = []

    def save(path, **arrays):
        if kill_after is not None and len(calls) == kill_after:
            raise Killed
        calls.append(path.stem)
        save_npz(path, **arrays)

    monkeypatch.setattr(make_cams_module, "save_npz", save)
    return calls


def test_a_killed_stage_leaves_no_output_and_resumes_the_rest(tiny_index, cpu, tmp_path, model, monkeypatch):
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    out = tmp_path / "cams"
    counting_saves(monkeypatch, kill_after=3)
    with pytest.raises(Killed):
        make_cams(tiny_index, ids, model, CAMS, cpu, out)
    assert not out.exists()  # nothing Snakemake could take as complete
    staged = sorted((tmp_path / ".cams.staging").glob("*.npz"))
    assert len(staged) == 3
    before = {p.name: p.stat().st_mtime_ns for p in staged}

    calls = counting_saves(monkeypatch)
    make_cams(tiny_index, ids, model, CAMS, cpu, out)
    assert sorted(calls) == sorted(set(ids) - {p.stem for p in staged})  # only the missing ones
    assert sorted(p.stem for p in out.glob("*.npz")) == sorted(ids)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz") if p.name in before} == before
    assert not (tmp_path / ".cams.staging").exists()


def test_staged_files_from_other_settings_are_discarded(tiny_index, cpu, tmp_path, model, monkeypatch):
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    counting_saves(monkeypatch, kill_after=3)
    with pytest.raises(Killed):
        make_cams(tiny_index, ids, model, CAMS, cpu, tmp_path / "cams")
    calls = counting_saves(monkeypatch)
    make_cams(tiny_index, ids, model, {"scales": [1.0, 0.5], "flip": False}, cpu, tmp_path / "cams")
    assert sorted(calls) == sorted(ids)  # every image recomputed under the new scales
    d = np.load(tmp_path / "cams" / f"{ids[0]}.npz")
    assert d["cam"].shape[1:] == (64, 64)


CRF = {"iterations": 1, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3}, "bilateral": {"sxy": 50, "srgb": 5, "compat": 10}}


def _maps(index, ids, folder, array):
    """CAM-like maps of each image's classes, as make_cams and random_walk write them."""
    rng = np.random.default_rng(0)
    for i in ids:
        keys = np.asarray(index.labels[i], np.int64)
        save_npz(folder / f"{i}.npz", keys=keys, **{array: rng.random((len(keys), 64, 64)).astype(np.float16)})
    return folder


def _cams(index, ids, tmp, model, cpu):
    make_cams(index, ids, model, CAMS, cpu, tmp / "out")


def _predictions(index, ids, tmp, model, cpu):
    from stages.models.segmentation import create_deeplab
    from stages.predict_segmentation import predict_segmentation

    seg = tmp.parent / "seg.pt"
    if not seg.exists():
        cfg = {"encoder": "resnet18", "decoder_channels": 32, "aspp_rates": [6, 12, 18], "aspp_separable": False,
               "frozen_bn": False, "pretrained": False, "pretrained_path": None}
        torch_model = create_deeplab("resnet18", 5, 32, aspp_rates=(6, 12, 18), aspp_separable=False, frozen_bn=False)
        save_model(seg, torch_model.state_dict(), {"encoder": "resnet18", "classes": index.classes, "config": cfg})
    predict_segmentation(index, ids, seg, {"scales": [1.0], "flip": False, "crf": {**CRF, "iterations": 0}}, cpu,
                         tmp / "out", processes=1)


def _affinity_labels(index, ids, tmp, model, cpu):
    from stages.affinity_labels import affinity_labels

    cams = tmp.parent / "cams"
    if not cams.exists():
        _maps(index, ids, cams, "cam")
    affinity_labels(index, ids, cams, {"fg_threshold": 0.4, "bg_threshold": 0.1, "crf": CRF}, tmp / "out", 1)


def _pseudo_labels(index, ids, tmp, model, cpu):
    from stages.pseudo_labels import pseudo_labels

    rw = tmp.parent / "rw"
    if not rw.exists():
        _maps(index, ids, rw, "rw")
    pseudo_labels(index, ids, rw, {"threshold": 0.35, "crf": CRF}, tmp / "out", 1)


def _random_walk(index, ids, tmp, model, cpu):
    from conftest import with_defaults

    from stages.models.factory import build_affinity_net
    from stages.random_walk import run_random_walk

    cams, net = tmp.parent / "cams_s4", tmp.parent / "affinity.pt"
    if not cams.exists():
        rng = np.random.default_rng(0)
        for i in ids:
            keys = np.asarray(index.labels[i], np.int64)
            save_npz(cams / f"{i}.npz", keys=keys, cam_s4=rng.random((len(keys), 16, 16)).astype(np.float16))
        cfg = with_defaults("affinity", {"head_channels": 16, "crop_size": 64})
        save_model(net, build_affinity_net(cfg, "resnet18").state_dict(), {"config": cfg, "backbone": "resnet18"})
    run_random_walk(index, ids, cams, net, {"radius": 5, "beta": 10, "exp_times": 2}, cpu, tmp / "out")


@pytest.mark.parametrize("stage", [_cams, _predictions, _affinity_labels, _pseudo_labels, _random_walk],
                         ids=["make_cams", "predict_segmentation", "affinity_labels", "pseudo_labels", "random_walk"])
def test_an_image_replaced_while_the_stage_was_killed_is_computed_again(tiny_voc, cpu, tmp_path, model, monkeypatch,
                                                                          stage):
    """Killed after staging every image; one image then replaced by another of the same byte size and mtime (a
    restore from backup): the rerun's output equals a clean run's on the new images (the staging key left the
    images out, and their size and mtime cannot tell)."""
    import shutil

    from conftest import layout_of

    from stages.core.staging import StagedOutputs
    from stages.image_labels import build_index

    root = tmp_path / "VOC2012"
    shutil.copytree(tiny_voc, root)
    layout = layout_of(root)
    index, ids_by_split = build_index(layout)
    ids = ids_by_split["train"]
    paths = sorted((index.image_path(i) for i in ids), key=lambda p: p.stat().st_size)
    small, large = paths[0], paths[-1]

    def killed(self):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(StagedOutputs, "commit", killed)
        with pytest.raises(Killed):
            stage(index, ids, tmp_path / "run", model, cpu)
    staging = tmp_path / "run/.out.staging"
    staged = {f.name: f.stat().st_mtime_ns for f in staging.iterdir() if not f.name.startswith(".")}
    st = large.stat()
    large.write_bytes(small.read_bytes().ljust(st.st_size, b"\0"))  # a JPEG ends at its end-of-image marker
    os.utime(large, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert [large.stat().st_size, large.stat().st_mtime_ns] == [st.st_size, st.st_mtime_ns]
    index, _ = build_index(layout)
    stage(index, ids, tmp_path / "run", model, cpu)
    stage(index, ids, tmp_path / "clean", model, cpu)
    out, clean = tmp_path / "run/out", tmp_path / "clean/out"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in clean.iterdir())
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in clean.iterdir()}
    redone = {f for f, mtime in staged.items() if (out / f).stat().st_mtime_ns != mtime}
    assert {Path(f).stem for f in redone} == {large.stem}  # the other images' staged files were kept


def test_a_temporary_file_a_killed_run_left_in_the_staging_folder_is_not_moved_into_the_output(tmp_path):
    """A job killed while writing one image leaves its temporary file in the staging folder; the output the rerun
    completes holds the images only."""
    from stages.core.staging import StagedOutputs

    staged = StagedOutputs(tmp_path / "labels", ".png", "settings")
    (staged.staging / ".a.png.host-1.x1.tmp").write_bytes(b"half")
    (staged.staging / "sub").mkdir()
    (staged.staging / "sub/.b.png.host-1.x2.tmp").write_bytes(b"half")
    staged = StagedOutputs(tmp_path / "labels", ".png", "settings")  # the rerun
    for i in ("a", "sub/b"):
        staged.path(i).write_bytes(b"png")
    staged.commit()
    assert sorted(p.relative_to(tmp_path / "labels").as_posix() for p in (tmp_path / "labels").rglob("*")) == [
        "a.png", "sub", "sub/b.png"]
