"""Hallo's masks from a face mesh."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from models.hallo.masks import LIP_IDS, SILHOUETTE_IDS, expand_region, hallo_masks, invert_mask


def _mesh() -> npt.NDArray[np.float32]:
    points = np.full((478, 3), 64.0, dtype=np.float32)
    points[list(SILHOUETTE_IDS), :2] = np.array(
        [[40, 30], [88, 30], [40, 100], [88, 100]] * 9, dtype=np.float32
    )
    points[list(LIP_IDS), :2] = np.array([[56, 80], [72, 80], [56, 88], [72, 88]] * 5, dtype=np.float32)
    return points


def test_expand_region_matches_the_reference_arithmetic() -> None:
    assert expand_region((40, 88, 30, 100), 128, 128, 1.2) == (36, 92, 23, 107)
    assert expand_region((0, 20, 0, 20), 128, 128, 2.0) == (0, 40, 0, 40)


def test_masks_regions_and_levels() -> None:
    masks = hallo_masks(_mesh(), (128, 128), 1.2, [(16, 16), (8, 8)])
    assert masks.face_region.shape == (3, 128, 128)
    assert masks.face_region[:, 60, 60].tolist() == [1.0, 1.0, 1.0] and masks.face_region[0, 2, 2] == 0.0
    full, face, lip = masks.levels[0]
    assert full.shape == face.shape == lip.shape == (256,)
    assert all(float(m.min()) >= 0.0 and float(m.max()) <= 1.0 for m in (full, face, lip))
    assert lip.reshape(16, 16)[10, 8] > lip.reshape(16, 16)[2, 2]
    assert full.reshape(16, 16)[1, 1] > full.reshape(16, 16)[8, 8]
    assert masks.levels[1][0].shape == (64,)
    with pytest.raises(ValueError, match="landmarks must be"):
        hallo_masks(np.zeros((10, 2), dtype=np.float32), (128, 128), 1.2, [(8, 8)])


def test_the_pose_mask_is_the_reference_s_float_inversion() -> None:
    values = np.arange(256, dtype=np.uint8)
    inverted = invert_mask(values)
    assert inverted[43] == 211 and inverted[0] == 255 and inverted[255] == 0 and inverted[100] == 155
    assert int((inverted != 255 - values).sum()) == 50
