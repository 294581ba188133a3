"""Per-image stages: a killed job leaves no output folder, and its rerun computes only what is missing."""
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
