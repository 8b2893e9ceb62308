"""Keypoint composition, motion sources and the renderer on tiny random weights (CPU)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from models.liveportrait.motion_source import MotionFrames, MotionSource, StillSource
from models.liveportrait.pipeline import LivePortraitPipeline, RetargetSettings, SourcePortrait
from models.liveportrait.procedural import EYE_CLOSED, EYE_OPEN, ProceduralAudioSource
from models.liveportrait.testing import tiny_modules
from tests.media import tone_samples


@pytest.fixture(scope="module")
def pipeline(one_torch_thread: None) -> LivePortraitPipeline:
    return LivePortraitPipeline(tiny_modules(seed=0))


@pytest.fixture(scope="module")
def source(pipeline: LivePortraitPipeline) -> SourcePortrait:
    crop = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
    return pipeline.prepare_source(crop, np.array([0.3, 0.28], np.float32), 0.1)


def _motion(pipeline: LivePortraitPipeline, count: int, seed: int) -> MotionFrames:
    crops = (np.random.default_rng(seed).random((count, 64, 64, 3)) * 255).astype(np.uint8)
    return pipeline.extract_motion(crops, batch_size=2)


def test_extract_motion_is_kp_info(pipeline: LivePortraitPipeline) -> None:
    motion = _motion(pipeline, 3, seed=1)
    assert len(motion) == 3 and motion.exp.shape == (3, 21, 3) and motion.t.shape == (3, 3)
    assert motion.pitch.dtype == np.float32 and np.all(np.abs(motion.yaw) <= 97.5)


def test_relative_motion_of_the_reference_frame_is_the_source(
    pipeline: LivePortraitPipeline, source: SourcePortrait
) -> None:
    motion = _motion(pipeline, 4, seed=2)
    settings = RetargetSettings(stitching=False, driving_option="pose-friendly")
    kp = pipeline.driving_keypoints(source, motion, motion.slice(0, 1), settings)
    torch.testing.assert_close(kp[0], source.x_s[0], rtol=0, atol=1e-5)
    assert not torch.allclose(kp[1], source.x_s[0], atol=1e-3)
    # expression-friendly rescales around the same first frame: frame 0 stays the source
    friendly = pipeline.driving_keypoints(
        source, motion, motion.slice(0, 1), RetargetSettings(stitching=False)
    )
    torch.testing.assert_close(friendly[0], source.x_s[0], rtol=0, atol=1e-5)


def test_absolute_motion_places_the_frame_itself(
    pipeline: LivePortraitPipeline, source: SourcePortrait
) -> None:
    still = MotionFrames.neutral(2, 21)
    kp = pipeline.driving_keypoints(source, still, None, RetargetSettings(stitching=False))
    torch.testing.assert_close(kp, source.kp.expand(2, -1, -1), rtol=0, atol=1e-6)  # R = I, exp = 0, s = 1


def test_multiplier_ratios_and_stitching_change_the_keypoints(
    pipeline: LivePortraitPipeline, source: SourcePortrait
) -> None:
    motion = _motion(pipeline, 2, seed=3)
    reference = motion.slice(0, 1)
    plain = pipeline.driving_keypoints(source, motion, reference, RetargetSettings(stitching=False))
    doubled = pipeline.driving_keypoints(
        source, motion, reference, RetargetSettings(stitching=False, driving_multiplier=2.0)
    )
    torch.testing.assert_close(doubled - source.x_s, 2 * (plain - source.x_s), rtol=1e-5, atol=1e-6)
    stitched = pipeline.driving_keypoints(source, motion, reference, RetargetSettings())
    assert not torch.allclose(stitched, plain)
    with_lips = MotionFrames(**{k: getattr(motion, k) for k in ("scale", "pitch", "yaw", "roll", "t", "exp")},
                             lip_ratio=np.array([[0.0], [0.4]], np.float32))  # fmt: skip
    lips = pipeline.driving_keypoints(source, with_lips, reference, RetargetSettings(stitching=False))
    no_lip_scale = pipeline.driving_keypoints(
        source, with_lips, reference, RetargetSettings(stitching=False, lip_multiplier=0.0)
    )
    torch.testing.assert_close(no_lip_scale, plain)
    assert not torch.allclose(lips, plain)


def test_render_is_batch_invariant_and_in_range(
    pipeline: LivePortraitPipeline, source: SourcePortrait
) -> None:
    motion = _motion(pipeline, 3, seed=4)
    kp = pipeline.driving_keypoints(source, motion, motion.slice(0, 1), RetargetSettings())
    whole = pipeline.render(source, kp, batch_size=3)
    split = pipeline.render(source, kp, batch_size=1)
    assert whole.shape == (3, 3, 128, 128)
    torch.testing.assert_close(whole, split, rtol=1e-5, atol=1e-6)
    assert float(whole.min()) >= 0.0 and float(whole.max()) <= 1.0


def _chunked(source: MotionSource, bounds: list[int]) -> MotionFrames:
    parts, carry = [], None
    for start, stop in itertools.pairwise(bounds):
        part, carry = source.frames(start, stop, carry)
        parts.append(part)
    return MotionFrames.concat(parts)


def test_procedural_source_chunked_equals_one_shot() -> None:
    audio = tone_samples(3.0)
    source = ProceduralAudioSource(audio, 16_000, 25.0, 75, 21, seed=1)
    whole, _ = source.frames(0, 75, None)
    chunked = _chunked(source, [0, 10, 11, 40, 75])
    for key in ("pitch", "yaw", "roll", "eye_ratio", "lip_ratio"):
        np.testing.assert_array_equal(getattr(chunked, key), getattr(whole, key))
    assert whole.lip_ratio is not None and whole.eye_ratio is not None
    assert float(whole.lip_ratio.max()) > 0.1 and float(whole.lip_ratio.min()) < 0.05  # talks and pauses
    assert (
        float(whole.eye_ratio.max()) == pytest.approx(EYE_OPEN)
        and float(whole.eye_ratio.min()) < EYE_CLOSED + 0.1
    )
    assert 0.2 < float(np.abs(whole.yaw).max()) <= 3.0
    still = ProceduralAudioSource(audio, 16_000, 25.0, 75, 21, sway_degrees=0.0, blink=False)
    frames, _ = still.frames(0, 75, None)
    assert frames.eye_ratio is not None and np.all(frames.eye_ratio == EYE_OPEN) and np.all(frames.yaw == 0)


def test_still_source_and_frame_checks() -> None:
    frames, carry = StillSource(4, 21).frames(1, 3, None)
    assert len(frames) == 2 and carry == {}
    with pytest.raises(ValueError, match=r"exp has shape"):
        MotionFrames(*(np.zeros((2, 1), np.float32) for _ in range(4)), t=np.zeros((2, 3), np.float32),
                     exp=np.zeros((2, 63), np.float32))  # fmt: skip
    with pytest.raises(ValueError, match=r"lip_ratio has shape"):
        MotionFrames.neutral(2, 21).__class__(
            **{
                k: getattr(MotionFrames.neutral(2, 21), k)
                for k in ("scale", "pitch", "yaw", "roll", "t", "exp")
            },
            lip_ratio=np.zeros((3, 1), np.float32),
        )
