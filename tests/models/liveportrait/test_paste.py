"""The reference's paste-back mask (analytic) and blend: shape, feathering, the photo unchanged outside."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.face import invert_affine
from models.liveportrait.paste import LivePortraitPasteBack, crop_mask


def test_mask_is_the_reference_shape_on_512_pixels() -> None:
    mask = crop_mask(512)
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert (mask[16:497, 16:497] == 1).all()  # the inner square [16, 496]
    assert (mask[0] == 0).all() and (mask[:, 0] == 0).all()  # the first row and column
    # linear 16-pixel ramps: x / 16 on the left, (512 - x) / 16 on the right (as the reference's image)
    np.testing.assert_allclose(mask[256, :17], np.arange(17) / 16, atol=1e-7)
    np.testing.assert_allclose(mask[256, 496:], (512 - np.arange(496, 512)) / 16, atol=1e-7)
    np.testing.assert_allclose(mask[:17, 256], mask[256, :17])
    # rounded corners: the same ramp on the distance to the inner square's corner
    assert mask[8, 8] == pytest.approx(1 - np.hypot(8, 8) / 16, abs=1e-6)
    assert mask[4, 4] == 0 and mask[2, 12] == pytest.approx(1 - np.hypot(14, 4) / 16, abs=1e-6)


def test_mask_scales_with_the_crop_and_refuses_bad_arguments() -> None:
    small = crop_mask(64)  # the tiny models' crop: a 2-pixel ramp
    assert (small[2:63, 2:63] == 1).all() and small[0, 32] == 0 and small[1, 32] == pytest.approx(0.5)
    wide = crop_mask(64, ramp_fraction=0.25)
    assert wide[8, 32] == pytest.approx(0.5) and (wide[16:49, 16:49] == 1).all()
    with pytest.raises(ValueError, match="ramp_fraction"):
        crop_mask(64, ramp_fraction=0.5)
    with pytest.raises(ValueError, match="size must be"):
        crop_mask(0)


def _geometry() -> tuple[np.ndarray, np.ndarray]:
    photo = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    angle, scale = 0.2, 128 / 100  # a 100-pixel region around (170, 110), rotated, into a 128 crop
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    matrix = np.array([[c, -s, 64 - c * 170 + s * 110], [s, c, 64 - s * 170 - c * 110]])
    return photo, matrix


def test_photo_outside_the_mask_is_unchanged_and_inside_is_the_render() -> None:
    photo, matrix = _geometry()
    paste = LivePortraitPasteBack(photo, 128, matrix)
    crops = np.random.default_rng(1).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    out = paste(crops)
    assert out.shape == (2, 240, 320, 3) and (paste.height, paste.width) == (240, 320)
    # the mask in photo space (full-size warp, as the reference warps its image)
    to_photo = invert_affine(matrix)
    alpha = cv2.warpAffine(crop_mask(128), to_photo, (320, 240), flags=cv2.INTER_LINEAR)
    outside = alpha == 0
    assert outside.mean() > 0.5
    np.testing.assert_array_equal(out[0][outside], photo[outside])
    np.testing.assert_array_equal(out[1][outside], photo[outside])
    # well inside the inner square the frame is the warped render (up to cv2's sub-pixel rounding)
    inner = cv2.erode((alpha == 1).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert inner.sum() > 3000
    rendered = cv2.warpAffine(crops[0], to_photo, (320, 240), flags=cv2.INTER_LINEAR)
    assert np.abs(out[0][inner].astype(int) - rendered[inner]).max() <= 12
    assert np.abs(out[0][inner].astype(int) - photo[inner]).mean() > 40


def test_feathering_blends_linearly_across_the_edge() -> None:
    photo = np.full((240, 320, 3), 40, np.uint8)
    _, matrix = _geometry()
    paste = LivePortraitPasteBack(photo, 128, matrix)
    crop = np.full((1, 128, 128, 3), 240, np.uint8)
    out = paste(crop)[0, ..., 0].astype(np.float32)
    alpha = paste.alpha[..., 0]
    rx0, ry0, rx1, ry1 = paste.roi
    region = out[ry0:ry1, rx0:rx1]
    warped = cv2.warpAffine(crop[0], paste.roi_matrix, (rx1 - rx0, ry1 - ry0), flags=cv2.INTER_LINEAR)
    # the reference's blend, truncated as its astype(uint8)
    expected = np.floor(alpha * warped[..., 0].astype(np.float32) + (1 - alpha) * 40 + 1e-4)
    assert np.abs(region - expected).max() <= 1  # float rounding at integer boundaries only
    ramp = (alpha > 0.2) & (alpha < 0.8)  # away from the crop's own edge (bilinear with the border)
    assert ramp.sum() > 100 and ((region[ramp] > 40) & (region[ramp] < 240)).all()


def test_the_engine_pastes_back_with_the_reference_mask(one_torch_thread: None) -> None:
    from models.engine import RenderInputs, RenderParams
    from models.liveportrait.engine import tiny_engine
    from models.liveportrait.options import LivePortraitOptions
    from models.liveportrait.testing import SyntheticFaceAnalyzer
    from tests.media import tone_samples

    engine = tiny_engine(seed=0, face_analyzer=SyntheticFaceAnalyzer(extent=0.2), motion_models=())
    photo = (np.random.default_rng(2).random((160, 128, 3)) * 200 + 40).astype(np.uint8)
    params = RenderParams(LivePortraitOptions(), fps=10.0, size=96, seed=0, framing="full")
    prepared = engine.prepare(RenderInputs(image=photo, audio=tone_samples(0.4)), params)
    assert isinstance(prepared.paste, LivePortraitPasteBack)
    frames, _ = engine.render_chunk(prepared, engine.plan(prepared)[0], None)
    paste = prepared.paste
    rx0, ry0, rx1, ry1 = paste.roi
    alpha = np.zeros(photo.shape[:2], np.float32)
    alpha[ry0:ry1, rx0:rx1] = paste.alpha[..., 0]
    outside, inside = alpha == 0, alpha == 1
    assert outside.any() and inside.any()
    for frame in frames:
        np.testing.assert_array_equal(frame[outside], photo[outside])  # the photo, bit for bit
    assert np.abs(frames[0][inside].astype(int) - photo[inside]).mean() > 5  # the render
