"""Training augmentation and label shrinking, against the reference's definitions."""
import numpy as np
import pytest
import torch
from PIL import Image

from stages.data.transforms import MEAN, normalize, random_crop, random_resize_long, resize_normalized
from stages.ops.affinity import downsample_labels


@pytest.mark.parametrize("size,out", [((64, 96), (16, 24)), ((128, 128), (32, 32)), ((50, 30), (13, 8))])
def test_labels_shrink_as_pil_nearest(size, out):
    # the reference shrinks affinity labels to the boundary map's size with PIL's nearest resize
    rng = np.random.default_rng(0)
    label = rng.integers(0, 21, size=(2, *size)).astype(np.uint8)
    ours = downsample_labels(torch.from_numpy(label).long(), out).numpy()
    for b in range(2):
        pil = np.asarray(Image.fromarray(label[b]).resize(out[::-1], Image.NEAREST))
        np.testing.assert_array_equal(ours[b], pil)


def test_stride_4_labels_sample_the_block_centre():
    label = torch.arange(32 * 32).reshape(1, 32, 32)
    np.testing.assert_array_equal(downsample_labels(label, (8, 8)), label[:, 2::4, 2::4])


def test_a_small_image_lands_at_a_random_offset_in_the_crop():
    img = np.full((40, 30, 3), 7, np.uint8)
    mask = np.ones((40, 30), np.uint8)
    offsets = set()
    for seed in range(100):
        out_img, out_mask = random_crop(img, mask, 64, np.random.default_rng(seed))
        assert out_img.shape == (64, 64, 3) and out_mask.shape == (64, 64)
        ys, xs = np.nonzero(out_mask == 1)
        top, left = ys.min(), xs.min()
        assert (ys.max() - top, xs.max() - left) == (39, 29) and len(ys) == 40 * 30  # the whole image, unscaled
        assert (out_img[top:top + 40, left:left + 30] == 7).all()
        assert (out_mask[out_mask != 1] == 255).all()
        assert np.allclose(out_img[out_mask == 255], np.round(MEAN), atol=1)  # padded with the mean
        assert 0 <= top <= 24 and 0 <= left <= 34
        offsets.add((top, left))
    tops, lefts = {t for t, _ in offsets}, {x for _, x in offsets}
    assert len(offsets) > 50 and min(tops) <= 2 and max(tops) >= 22 and min(lefts) <= 2 and max(lefts) >= 32


def test_a_large_image_is_cropped_without_padding():
    img = np.arange(80 * 70 * 3, dtype=np.int64).reshape(80, 70, 3).astype(np.uint16)
    out, _ = random_crop(img, None, 64, np.random.default_rng(3))
    y, x = divmod(int(out[0, 0, 0]) // 3, 70)
    np.testing.assert_array_equal(out, img[y:y + 64, x:x + 64])


@pytest.mark.parametrize("size", [(18, 26), (75, 106), (50, 40)])
def test_scales_are_resized_as_the_reference_resizes_the_photo(size):
    # the reference resizes the 8-bit photo with PIL's bicubic filter, then normalises; a normalised batch here
    img = np.random.default_rng(0).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    out = resize_normalized(torch.stack([normalize(i) for i in img]), size)
    for k in range(2):
        expected = np.asarray(Image.fromarray(img[k]).resize(size[::-1], Image.BICUBIC))
        assert torch.allclose(out[k], normalize(expected), atol=1e-5)
    assert resize_normalized(out, size) is out  # the own size is not resampled


def test_training_resizes_with_pil_bicubic_and_masks_nearest():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (30, 40), dtype=np.uint8)
    out, out_mask = random_resize_long(img, mask, (60, 60), rng)
    assert out.shape == (45, 60, 3)
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(img).resize((60, 45), Image.BICUBIC)))
    np.testing.assert_array_equal(out_mask, np.asarray(Image.fromarray(mask).resize((60, 45), Image.NEAREST)))
