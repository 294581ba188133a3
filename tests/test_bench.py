"""The benchmark's equality checks on tiny inputs: each project path against its naive reference."""
import contextlib
import copy
import multiprocessing as mp
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from conftest import ROOT

from bench import naive
from bench.measure import TreePeak
from bench.report import Row, embedded_projection
from bench.stages import CASES, EMBEDDED_MODELS, Settings, cam_setup, crf_setup, embedded_config, walk, walk_setup
from stages.core.parallel import imap
from stages.data.transforms import normalize
from stages.models.classifier import CAMClassifier
from stages.models.segmentation import create_deeplab
from stages.ops.cam import multiscale_cam, multiscale_cams
from stages.ops.random_walk import random_walk

TINY = Settings(backbone="resnet18", height=40, width=56, n=3, crop=64, rw_height=10, rw_width=14)


def test_batched_cams_equal_per_image_cams():
    state = cam_setup(TINY)
    model = state["model"]
    images = torch.stack([torch.randn(3, 40, 56) for _ in range(3)])
    keys = [[1, 4], [7], [2, 3, 20]]
    batched = multiscale_cams(model, images, [1.0, 0.5, 1.5], True, keys, contextlib.nullcontext)
    for img, k, (cam, cam_s4) in zip(images, keys, batched):
        one, one_s4 = multiscale_cam(model, img, [1.0, 0.5, 1.5], True, k, contextlib.nullcontext)
        assert cam.shape == (len(k), 40, 56)
        torch.testing.assert_close(cam, one, atol=1e-5, rtol=0)
        torch.testing.assert_close(cam_s4, one_s4, atol=1e-5, rtol=0)


def test_project_cams_equal_the_naive_loop():
    state = cam_setup(TINY)
    case = CASES["CAM generation (4 scales x flip)"]
    images, keys = [d.image for d in state["data"]], [d.keys for d in state["data"]]
    ref = naive.cams(state["model"], images, keys, [1.0, 0.5, 1.5, 2.0])
    model = state["rt"].inference_model(copy.deepcopy(state["model"]))  # BatchNorm folded, as make_cams runs it
    for img, k, (cam, cam_s4) in zip(images, keys, ref):
        got, got_s4 = multiscale_cam(model, normalize(img), [1.0, 0.5, 1.5, 2.0], True, k, contextlib.nullcontext)
        torch.testing.assert_close(got, cam, atol=1e-4, rtol=0)
        torch.testing.assert_close(got_s4, cam_s4, atol=1e-4, rtol=0)
    assert case.compare(case.project(state), case.naive(state)) <= case.tolerance(TINY)


def test_banded_walk_equals_the_dense_matrix_power():
    for seeds, boundary in walk_setup(TINY, full=False)["pairs"]:
        seeds, boundary = seeds.double(), boundary.double()
        dense = naive.random_walk(seeds, boundary, 5, 10, 8)
        banded = random_walk(seeds, boundary, 5, 10, 8)
        assert dense.abs().max() > 0
        torch.testing.assert_close(banded, dense, atol=1e-10, rtol=1e-8)


def test_pool_crf_equals_the_single_process_reference():
    case = CASES["dense CRF (10 iterations)"]
    state = crf_setup(Settings(height=30, width=40, n=1, threads=2))
    pooled, single = case.project(state), case.naive(state)
    assert len(pooled) == 8 and all(p.shape == (30, 40) for p in pooled)
    assert case.compare(pooled, single) == 0.0
    # the CRF changed something: the noisy labels are smoothed
    assert any((p != labels).any() for p, (_, labels, _) in zip(pooled, state["jobs"]))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["classifier training step (puzzle)", "DeepLabv3+ training step"])
def test_training_steps_give_the_references_loss_terms(name, precision):
    """The project's step (its loss functions, the runtime's placement and autocast) against the reference's loss
    terms written out in bench/naive.py, in fp32. Fails if a loss term departs from the reference's definition
    (say L_p-cls on the tiles' maps before they are merged back, or the 255 outline not ignored); bf16 deviates more,
    within its tolerance."""
    case = CASES[name]
    settings = Settings(backbone="resnet18", n=2, crop=64, precision=precision)
    state = case.setup(settings)
    if "mask" in state["batch"]:  # some pixels of VOC's outline, which the loss must ignore
        state["batch"]["mask"][:, :8] = 255
    got, ref = case.project(state), case.naive(state)
    assert np.isfinite(got[0]).all() and got[0][-1] > 0
    deviation = case.compare(got, ref)
    assert deviation <= case.tolerance(settings) == {"fp32": 1e-4, "bf16": 3e-2}[precision]
    if precision == "bf16":
        assert deviation > 0  # it did compute in bf16


# (ready, release) of _hold's workers, set before the pool forks them
HELD = None


def _hold(mib: int) -> int:
    block = np.ones(mib * 2**20, np.uint8)  # touched: resident
    ready, release = HELD
    ready.release()
    release.wait()  # until the test has sampled both workers holding their block
    return int(block[-1])


def test_tree_peak_counts_what_pool_children_allocate_not_what_they_inherit(monkeypatch):
    """Sampled once by hand while both workers hold 64 MiB each (the sampler thread's own samples come too rarely
    to matter): about 128 MiB, not the parent's resident pages that the forked workers inherit (hundreds of MiB)."""
    ctx = mp.get_context("fork")
    ready, release = ctx.Semaphore(0), ctx.Event()
    monkeypatch.setattr(sys.modules[__name__], "HELD", (ready, release))
    results = []
    with TreePeak(interval=3600) as tree:
        pool = threading.Thread(target=lambda: results.extend(imap(_hold, [64, 64], 2)))
        pool.start()
        for _ in range(2):
            ready.acquire()
        tree.sample()
        release.set()
        pool.join()
    assert results == [1, 1]
    grown = tree.children_peak / 2**20
    assert 100 < grown < 200, grown


@pytest.mark.parametrize("model", ["classifier", "affinity", "DeepLabv3+"])
def test_embedded_whole_steps_train_the_embedded_config(model):
    """Two whole steps (loader, augmentation, step) of the embedded default's model, as the pipeline trains it."""
    case = CASES[f"embedded {model} training step"]
    settings = Settings(precision="fp32", threads=2)
    state = case.setup(settings)
    config = embedded_config()
    assert case.count(settings) == 2 * config[EMBEDDED_MODELS[model].section]["batch_size"]
    got = case.project(state)
    assert len(got) == 2 and all(np.isfinite(g).all() for g in got)
    assert not np.array_equal(got[0], got[1])  # the second batch saw the first step's update
    # the first step's loss terms against the reference's, written out in bench/naive.py
    assert case.compare(got, case.naive(state)) <= case.tolerance(settings) == 1e-4


def test_embedded_projection_counts_the_embedded_schedule():
    config = embedded_config()
    train = config["data"]["generate"]["splits"]["train"]
    rows = [Row(f"embedded {m} training step", "", 10, {"seconds": 5.0, "peak_mb": 1}, None, None, None)
            for m in EMBEDDED_MODELS]  # 2 img/s each
    lines = embedded_projection(rows, "CPU test")
    expected = 0.0
    for model, spec in EMBEDDED_MODELS.items():
        cfg = config[spec.section]
        runs = 2 if spec.section == "segmentation" and cfg["upper_bound"] else 1
        images = runs * cfg["epochs"] * (train // cfg["batch_size"]) * cfg["batch_size"]
        expected += images / 2.0
        assert any(line.startswith(f"| {model} | {runs} |") and line.endswith(f"| {images / 2.0:.0f} |") for line in lines)
    assert lines[-2] == f"| **total** | | | | | **{expected:.0f}** |"


def test_the_naive_versions_compute_on_the_device_of_their_inputs(on_meta):
    """``python -m bench --device cuda`` runs them on the GPU: the meta device stands in for one here."""
    pairs = walk_setup(TINY, full=False)["pairs"][:1]
    data = cam_setup(TINY)["data"][:1]
    with on_meta() as device:
        for fn in (naive.random_walk, random_walk):
            assert walk(fn, {"pairs": pairs, "device": device})[0].shape == pairs[0][0].shape
        model = CAMClassifier("resnet18", 20).eval().to(device)
        cam, cam_s4 = naive.cams(model, [d.image for d in data], [d.keys for d in data], [1.0, 0.5])[0]
        assert cam.shape == (len(data[0].keys), 40, 56) and cam_s4.shape == (len(data[0].keys), 10, 14)
        model = create_deeplab("resnet18", 21, 32).eval().to(device)
        assert naive.segmentation_logits(model, [d.image for d in data], [0.5, 1.0])[0].shape == (21, 40, 56)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU runs the whole check: make gpu-check")
def test_the_gpu_check_stops_with_one_line_where_there_is_no_gpu(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(tmp_path / "check.md")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("gpu-check: no GPU: ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "check.md").exists()
