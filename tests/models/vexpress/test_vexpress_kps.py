"""V-kps images, head-motion sequences and retargeting."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from models.vexpress.kps import (
    draw_kps_image,
    draw_kps_video,
    driving_video_kps,
    resample_kps,
    retarget_kps,
    still_kps,
    sway_kps,
    transform_kps,
)

REFERENCE_KPS = np.array([[40.3, 50.7], [88.9, 49.2], [64.6, 78.1]], dtype=np.float32)


def test_draw_kps_image_draws_limbs_then_discs_in_the_reference_colours() -> None:
    image = draw_kps_image(128, 128, REFERENCE_KPS)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    # discs at the truncated points, drawn last
    for (x, y), colour in zip(
        REFERENCE_KPS.astype(int), [(255, 0, 0), (0, 255, 0), (0, 0, 255)], strict=True
    ):
        assert tuple(image[y, x]) == colour
    # limb bodies halfway between each eye and the nose: 0.6 x the eye's colour
    for eye, colour in ((0, (153, 0, 0)), (1, (0, 153, 0))):
        x, y = ((REFERENCE_KPS[eye] + REFERENCE_KPS[2]) / 2).astype(int)
        assert tuple(image[y, x]) == colour
    assert tuple(image[5, 5]) == (0, 0, 0) and tuple(image[120, 120]) == (0, 0, 0)
    # only these five colours appear: no anti-aliasing
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours == {(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (153, 0, 0), (0, 153, 0)}


def test_draw_kps_video_is_the_frames_scaled_to_unit_range() -> None:
    sequence = np.stack([REFERENCE_KPS, REFERENCE_KPS + 3.0])
    video = draw_kps_video(128, 96, sequence)
    assert video.shape == (1, 3, 2, 128, 96)
    assert float(video.min()) == 0.0 and float(video.max()) == 1.0
    np.testing.assert_array_equal(
        (video[0, :, 1].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
        draw_kps_image(128, 96, sequence[1]),
    )


def test_transform_kps_applies_the_affine() -> None:
    matrix = np.array([[0.5, 0.0, 10.0], [0.0, 0.5, -4.0]])
    np.testing.assert_allclose(
        transform_kps(REFERENCE_KPS, matrix), REFERENCE_KPS * 0.5 + [10.0, -4.0], rtol=1e-6
    )


def test_still_kps_repeats_the_reference() -> None:
    sequence = still_kps(REFERENCE_KPS, 7)
    assert sequence.shape == (7, 3, 2)
    assert np.all(sequence == REFERENCE_KPS)


def test_sway_starts_at_the_reference_stays_gentle_and_is_seeded() -> None:
    sway = sway_kps(REFERENCE_KPS, 250, fps=25.0, amplitude=1.0, seed=3)
    assert sway.shape == (250, 3, 2)
    np.testing.assert_allclose(sway[0], REFERENCE_KPS, atol=1e-4)
    eye_distance = float(np.linalg.norm(REFERENCE_KPS[0] - REFERENCE_KPS[1]))
    assert np.abs(sway - REFERENCE_KPS).max() < 0.35 * eye_distance
    assert np.abs(sway - REFERENCE_KPS).max() > 0.02 * eye_distance  # it does move
    assert np.abs(np.diff(sway, axis=0)).max() < 0.05 * eye_distance  # smoothly
    np.testing.assert_array_equal(sway, sway_kps(REFERENCE_KPS, 250, 25.0, 1.0, seed=3))
    assert not np.array_equal(sway, sway_kps(REFERENCE_KPS, 250, 25.0, 1.0, seed=4))
    half = sway_kps(REFERENCE_KPS, 250, 25.0, 0.5, seed=3)
    assert np.abs(half - REFERENCE_KPS).max() < np.abs(sway - REFERENCE_KPS).max()
    np.testing.assert_allclose(
        sway_kps(REFERENCE_KPS, 50, 25.0, 0.0), still_kps(REFERENCE_KPS, 50), atol=1e-4
    )


def test_resample_kps_cuts_longer_sequences_and_stretches_shorter_ones() -> None:
    sequence = np.cumsum(np.ones((10, 3, 2), dtype=np.float32), axis=0)
    np.testing.assert_array_equal(resample_kps(sequence, 4), sequence[:4])
    stretched = resample_kps(sequence[:2], 4)  # values 1, 2 -> align_corners=False: 1, 1.25, 1.75, 2
    np.testing.assert_allclose(stretched[:, 0, 0], [1.0, 1.25, 1.75, 2.0])


def test_offset_retarget_moves_the_reference_by_half_the_scaled_nose_motion() -> None:
    driving = np.stack([REFERENCE_KPS * 2.0] * 3)  # the same face at twice the size
    driving[1, 2] += [10.0, 0.0]  # nose moves right by 10 driving pixels = 5 reference pixels
    result = retarget_kps(REFERENCE_KPS, driving, "offset")
    np.testing.assert_allclose(result[0], REFERENCE_KPS, atol=1e-5)
    np.testing.assert_allclose(result[2], REFERENCE_KPS, atol=1e-5)
    np.testing.assert_allclose(result[1], REFERENCE_KPS - [2.5, 0.0], atol=1e-4)


def test_naive_retarget_puts_the_first_nose_on_the_reference_nose() -> None:
    driving = np.stack([REFERENCE_KPS * 2.0 + 7.0, REFERENCE_KPS * 2.0 + 9.0])
    result = retarget_kps(REFERENCE_KPS, driving, "naive")
    np.testing.assert_allclose(result[0, 2], REFERENCE_KPS[2], atol=1e-4)
    np.testing.assert_allclose(result[0], REFERENCE_KPS, atol=1e-3)  # same face shape, scaled back
    assert retarget_kps(REFERENCE_KPS, driving, "none") == pytest.approx(driving)


class BrightestSpotDetector:
    """Test detector: a 'face' whose nose is the brightest pixel, eyes 10 px above it."""

    def detect(self, image: np.ndarray) -> list[object]:
        gray = image.astype(np.float32).sum(axis=2)
        if gray.max() < 300:
            return []
        y, x = np.unravel_index(int(gray.argmax()), gray.shape)

        class Found:
            keypoints = np.array(
                [[x - 8, y - 10], [x + 8, y - 10], [x, y], [x - 5, y + 8], [x + 5, y + 8]], np.float32
            )

        return [Found()]


def encode_moving_dot_video(num_frames: int, fps: int, dark_frames: tuple[int, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.options = {"qp": "0"}
        for index in range(num_frames):
            image = np.zeros((64, 64, 3), dtype=np.uint8)
            if index not in dark_frames:
                image[30:34, 10 + 4 * index : 14 + 4 * index] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_driving_video_kps_samples_frames_by_time_and_fills_gaps() -> None:
    video = encode_moving_dot_video(num_frames=8, fps=10, dark_frames=(3,))
    kps = driving_video_kps(video, BrightestSpotDetector(), num_frames=12, fps=20.0)
    assert kps.shape == (12, 3, 2)
    noses = kps[:, 2, 0]
    # output frame i at i/20 s shows driving frame i // 2; driving frame 3 has no face -> frame 2's
    expected_frames = [0, 0, 1, 1, 2, 2, 2, 2, 4, 4, 5, 5]
    assert noses.tolist() == pytest.approx([10 + 4 * f for f in expected_frames], abs=1.5)


def test_driving_video_kps_rejects_videos_without_faces_or_undecodable_bytes() -> None:
    with pytest.raises(ValueError, match="no face"):
        driving_video_kps(
            encode_moving_dot_video(3, 10, dark_frames=(0, 1, 2)), BrightestSpotDetector(), 4, 10.0
        )
    with pytest.raises(ValueError, match="cannot decode"):
        driving_video_kps(b"not a video", BrightestSpotDetector(), 4, 10.0)
