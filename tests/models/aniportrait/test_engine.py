"""AniPortraitEngine behind the engine seam, on tiny random weights (CPU, fp32, 2 steps, 64x64)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import EngineFailure, InvalidInput, WeightsError
from models.aniportrait.engine import (
    AniPortraitEngine,
    AniPortraitPrepared,
    mirror_tile,
    missing_weight_files,
    poses_from_matrices,
    resample_frames,
)
from models.aniportrait.landmarks import pose_matrix
from models.aniportrait.landmarks_file import read_landmarks_npz
from models.aniportrait.options import AniPortraitTinyOptions
from models.engine import ChunkCarry, RenderInputs, RenderParams, make_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 64


def params(**overrides: object) -> RenderParams[AniPortraitTinyOptions]:
    values: dict[str, object] = {
        "fps": 10.0,
        "size": SIZE,
        "seed": 7,
        "context_frames": 6,
        "context_overlap": 2,
    }
    values.update(overrides)
    return make_params(AniPortraitTinyOptions, **values)


def inputs(seconds: float = 1.5, driving_video: bytes | None = None) -> RenderInputs:
    image = np.random.default_rng(0).integers(0, 256, (80, 72, 3), dtype=np.uint8)
    audio = np.random.default_rng(1).normal(0, 0.1, int(16000 * seconds)).astype(np.float32)
    return RenderInputs(image=image, audio=audio, driving_video=driving_video)


@pytest.fixture(scope="module")
def engine() -> AniPortraitEngine:
    from models.aniportrait.testing import tiny_engine
    from models.vexpress.testing import FixedKeypointAnalyzer

    return tiny_engine(seed=0, face_analyzer=FixedKeypointAnalyzer())


def render_all(
    engine: AniPortraitEngine, job_inputs: RenderInputs, job_params: RenderParams[AniPortraitTinyOptions]
) -> tuple[np.ndarray, list[bytes]]:
    prepared = engine.prepare(job_inputs, job_params)
    frames, carries, carry = [], [], None
    for chunk in engine.plan(prepared):
        chunk_frames, carry = engine.render_chunk(prepared, chunk, carry)
        assert chunk_frames.shape == (chunk.num_frames, prepared.height, prepared.width, 3)
        frames.append(chunk_frames)
        carries.append(carry.to_bytes())
    return np.concatenate(frames), carries


def test_plan_covers_every_frame(engine: AniPortraitEngine) -> None:
    prepared = engine.prepare(inputs(1.5), params())
    assert (prepared.num_frames, prepared.height, prepared.width, prepared.fps) == (15, SIZE, SIZE, 10.0)
    assert [(c.start, c.stop) for c in engine.plan(prepared)] == [(0, 6), (6, 10), (10, 14), (14, 15)]
    assert prepared.points.shape == (15, 468, 2) and prepared.points.dtype == np.float32
    assert prepared.poses.shape == (15, 6)
    # the synthetic head sits in the middle of the crop
    assert 0.2 * SIZE < prepared.points[..., 0].mean() < 0.8 * SIZE


def test_single_window_clip_is_the_one_shot_pipeline(engine: AniPortraitEngine) -> None:
    from models.aniportrait.pipeline import render_clip

    job_inputs, job_params = inputs(0.5), params()
    frames, _ = render_all(engine, job_inputs, job_params)
    prepared = engine.prepare(job_inputs, job_params)
    crop = _crop(engine, job_inputs)
    one_shot = render_clip(
        engine.pipeline, engine.components.pose_guider, crop, prepared.clip_tokens,
        engine.landmark_images(prepared, 0, prepared.num_frames), num_inference_steps=2,
        context_frames=6, context_overlap=2, generator=torch.Generator().manual_seed(7),
    )  # fmt: skip
    np.testing.assert_array_equal(frames, one_shot)


def _crop(engine: AniPortraitEngine, job_inputs: RenderInputs) -> np.ndarray:
    from models.face import crop_around_face

    face = engine.face_analyzer.detect(job_inputs.image)[0]
    return np.asarray(crop_around_face(job_inputs.image, face, SIZE).image)


def test_a_resumed_job_reproduces_the_uninterrupted_frames(engine: AniPortraitEngine) -> None:
    job_inputs, job_params = inputs(1.5), params()
    frames, carries = render_all(engine, job_inputs, job_params)
    prepared = engine.prepare(job_inputs, job_params)  # a new process: prepare again, resume at chunk 2
    chunks = engine.plan(prepared)
    carry = ChunkCarry.from_bytes(carries[1])
    resumed = []
    for chunk in chunks[2:]:
        chunk_frames, carry = engine.render_chunk(prepared, chunk, carry)
        resumed.append(chunk_frames)
    np.testing.assert_array_equal(np.concatenate(resumed), frames[chunks[2].start :])
    with pytest.raises(EngineFailure, match="needs the carry"):
        engine.render_chunk(prepared, chunks[1], None)


def test_memory_is_flat_in_the_clip_length(engine: AniPortraitEngine) -> None:
    short, long = engine.prepare(inputs(1.0), params()), engine.prepare(inputs(4.0), params())
    assert short.clip_tokens.shape == long.clip_tokens.shape
    assert [b.shape for b in short.bank] == [b.shape for b in long.bank]
    carry_sizes = {len(engine.render_chunk(p, engine.plan(p)[0], None)[1].to_bytes()) for p in (short, long)}
    assert len(carry_sizes) == 1  # the carry holds one window's motion latents and the noise state


def test_head_motion_and_seed(engine: AniPortraitEngine) -> None:
    still = engine.prepare(inputs(1.0), params(head_motion="still"))
    np.testing.assert_array_equal(still.poses, 0)
    moving = engine.prepare(inputs(1.0), params())
    assert np.abs(moving.poses).max() > 0
    other = engine.prepare(inputs(1.0), params(seed=8))  # another audio2pose speaker id
    assert not np.array_equal(other.poses, moving.poses)


def test_landmarks_output(engine: AniPortraitEngine) -> None:
    prepared = engine.prepare(inputs(1.0), params())
    parts, carry = [], None
    for chunk in engine.plan(prepared):
        frames, carry, extra = engine.render_chunk_outputs(prepared, chunk, carry, frozenset({"landmarks"}))
        assert extra["landmarks"]["points"].shape == (chunk.num_frames, 468, 2)
        assert extra["landmarks"]["poses"].shape == (chunk.num_frames, 6)
        parts.append(extra["landmarks"])
    joined = {key: np.concatenate([part[key] for part in parts]) for key in ("points", "poses")}
    target = io.BytesIO()
    engine.write_output(prepared, "landmarks", joined, target)
    points, poses, meta = read_landmarks_npz(target.getvalue())
    np.testing.assert_array_equal(points, prepared.points)
    np.testing.assert_array_equal(poses, prepared.poses)
    assert (meta["format"], meta["version"], meta["num_frames"], meta["fps"]) == (
        "parla-landmarks",
        1,
        10,
        10.0,
    )
    assert (meta["width"], meta["height"], meta["convention"]) == (SIZE, SIZE, "mediapipe-468")
    assert np.asarray(meta["crop_matrix"]).shape == (2, 3)
    # the frames are render_chunk's
    chunk = engine.plan(prepared)[0]
    frames, _, _ = engine.render_chunk_outputs(prepared, chunk, None, frozenset())
    np.testing.assert_array_equal(frames, engine.render_chunk(prepared, chunk, None)[0])
    with pytest.raises(EngineFailure, match="motion"):
        engine.render_chunk_outputs(prepared, chunk, None, frozenset({"motion"}))
    with pytest.raises(EngineFailure, match="all 10 frames"):
        engine.write_output(prepared, "landmarks", {key: value[:5] for key, value in joined.items()}, target)
    with pytest.raises(EngineFailure, match="'motion'"):
        engine.write_output(prepared, "motion", joined, target)


def test_full_framing_pastes_the_crop_back(engine: AniPortraitEngine) -> None:
    prepared: AniPortraitPrepared = engine.prepare(inputs(0.3), params(framing="full"))
    frames, _ = engine.render_chunk(prepared, engine.plan(prepared)[0], None)
    assert frames.shape[1:] == (prepared.height, prepared.width, 3) == (80, 72, 3)


def test_refused_inputs(engine: AniPortraitEngine) -> None:
    with pytest.raises(InvalidInput, match="multiple of 64"):
        engine.prepare(inputs(0.5), params(size=96))
    with pytest.raises(InvalidInput, match="driving_video"):
        engine.prepare(inputs(0.5), params(head_motion="driving"))
    with pytest.raises(InvalidInput) as caught:
        engine.prepare(inputs(0.5, driving_video=b"not a video"), params(head_motion="driving"))
    assert caught.value.code == "invalid_driving_video"


class NoFace:
    def analyze(self, image: np.ndarray) -> None:
        return None


def test_a_portrait_the_landmarker_does_not_see_is_refused() -> None:
    from models.aniportrait.testing import tiny_engine
    from models.vexpress.testing import FixedKeypointAnalyzer

    blind = tiny_engine(face_analyzer=FixedKeypointAnalyzer(), geometry_analyzer=NoFace())
    with pytest.raises(InvalidInput) as caught:
        blind.prepare(inputs(0.5), params())
    assert caught.value.code == "no_face_found"


def test_an_incomplete_weights_dir_is_refused_with_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / "audio2mesh.pt").write_bytes(b"")
    missing = missing_weight_files(tmp_path)
    assert "audio2mesh.pt" not in missing and "audio2pose.pt" in missing
    assert "face_landmarker_v2_with_blendshapes.task" in missing
    assert "image_encoder/model.safetensors or image_encoder/pytorch_model.bin" in missing
    with pytest.raises(WeightsError, match=r"missing: .*audio2pose\.pt"):
        AniPortraitEngine(weights_dir=tmp_path, device="cpu")


def test_the_registry_builds_the_tiny_engine() -> None:
    from models.registry import build_engine, engine_spec
    from models.vexpress.testing import FixedKeypointAnalyzer

    tiny = build_engine(
        "aniportrait-tiny", device="cpu", weights_dir=None, face_analyzer=FixedKeypointAnalyzer()
    )
    assert tiny.options_model is AniPortraitTinyOptions
    assert engine_spec("aniportrait").capabilities.outputs == ("video", "landmarks")
    prepared = tiny.prepare(inputs(0.2), make_params(tiny.options_model, size=SIZE, fps=10.0))
    assert (prepared.num_frames, prepared.height) == (2, SIZE)


# helpers ---------------------------------------------------------------------------------------


def test_resample_frames_is_exact_at_30_fps_and_linear_otherwise() -> None:
    values = np.arange(12, dtype=np.float64).reshape(6, 2)
    np.testing.assert_array_equal(resample_frames(values, 6, 30.0), values)
    np.testing.assert_allclose(resample_frames(values, 4, 20.0)[:, 0], [0, 3, 6, 9])
    np.testing.assert_allclose(resample_frames(values, 8, 30.0)[-1], values[-1])  # clamped at the end


def test_poses_from_matrices_invert_the_projection_pose() -> None:
    base = pose_matrix(np.array([3.0, -5.0, 2.0, 1.0, 2.0, -40.0]))
    pose = np.array([10.0, -20.0, 5.0, 0.5, -1.0, 2.0])
    poses = poses_from_matrices(np.stack([base, base @ pose_matrix(pose)]))
    np.testing.assert_allclose(poses[0], 0, atol=1e-9)
    np.testing.assert_allclose(poses[1], pose, atol=1e-9)


def test_mirror_tile() -> None:
    poses = np.arange(4, dtype=np.float64)[:, None].repeat(6, axis=1)
    np.testing.assert_array_equal(mirror_tile(poses, 9)[:, 0], [0, 1, 2, 3, 2, 1, 0, 1, 2])
    np.testing.assert_array_equal(mirror_tile(poses, 3), poses[:3])
