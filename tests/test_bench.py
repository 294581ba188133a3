"""The benchmark's equality checks on tiny inputs: each project path against its naive reference."""
import contextlib
import copy

import numpy as np
import pytest
import torch

from bench import naive
from bench.stages import CASES, Settings, cam_setup, crf_setup, walk_setup
from stages.data.transforms import normalize
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


def test_project_cams_equal_the_naive_loop_where_the_resizes_agree():
    # PIL's bilinear upscaling matches torch's; downscaling differs (PIL antialiases), so scales >= 1 here
    state = cam_setup(TINY)
    case = CASES["CAM generation (4 scales x flip)"]
    images, keys = [d.image for d in state["data"]], [d.keys for d in state["data"]]
    ref = naive.cams(state["model"], images, keys, [1.0, 1.5, 2.0])
    model = state["rt"].inference_model(copy.deepcopy(state["model"]))  # BatchNorm folded, as make_cams runs it
    for img, k, (cam, cam_s4) in zip(images, keys, ref):
        got, got_s4 = multiscale_cam(model, normalize(img), [1.0, 1.5, 2.0], True, k, contextlib.nullcontext)
        torch.testing.assert_close(got, cam, atol=1e-4, rtol=0)
        torch.testing.assert_close(got_s4, cam_s4, atol=1e-4, rtol=0)
    # with every scale, the stated tolerance holds
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
    assert len(pooled) == 4 and all(p.shape == (30, 40) for p in pooled)
    assert case.compare(pooled, single) == 0.0
    # the CRF changed something: the noisy labels are smoothed
    assert any((p != labels).any() for p, (_, labels, _) in zip(pooled, state["jobs"]))


@pytest.mark.parametrize("name", ["classifier training step (puzzle)", "DeepLabv3+ training step"])
def test_training_steps_match_fp32_on_the_cpu(name):
    case = CASES[name]
    state = case.setup(Settings(backbone="resnet18", n=2, crop=64))
    got, ref = case.project(state), case.naive(state)
    assert np.isfinite(got[0]).all() and got[0][-1] > 0
    assert case.compare(got, ref) <= case.tolerance(TINY)
