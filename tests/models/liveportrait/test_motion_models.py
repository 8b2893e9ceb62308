"""The liveportrait engine driven by the audio -> motion models (Ditto, JoyVASA) on tiny random weights:
chunked == one-shot, resume from the carry == uninterrupted, controls, refusals, the weights check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import InvalidInput, WeightsError
from models.engine import ChunkCarry, ChunkSpec, RenderInputs, RenderParams
from models.liveportrait.engine import LivePortraitEngine, LivePortraitPrepared, tiny_engine
from models.liveportrait.options import LivePortraitOptions
from models.liveportrait.pipeline import RetargetSettings
from models.liveportrait.testing import SyntheticFaceAnalyzer, tiny_modules
from models.motion.weights import MOTION_FILES
from models.options import validate_options
from tests.media import tone_samples

FPS = 25.0
MODELS = ["ditto", "joyvasa"]


@pytest.fixture(scope="module")
def engine(one_torch_thread: None) -> LivePortraitEngine:
    return tiny_engine(seed=0, face_analyzer=SyntheticFaceAnalyzer(), chunk_seconds=0.4, batch_size=4)


def _inputs(seconds: float = 1.6) -> RenderInputs:
    rng = np.random.default_rng(0)
    image = (rng.random((160, 128, 3)) * 200 + 40).astype(np.uint8)
    return RenderInputs(image=image, audio=tone_samples(seconds))


def _params(fps: float = FPS, **options: object) -> RenderParams[LivePortraitOptions]:
    validated = validate_options(LivePortraitOptions, dict(options), driving_video=False)
    return RenderParams(validated, fps=fps, size=64, seed=3, framing="crop")  # type: ignore[arg-type]


def _render(
    engine: LivePortraitEngine, prepared: LivePortraitPrepared, chunks: list[ChunkSpec]
) -> np.ndarray:
    frames, carry = [], None
    for chunk in chunks:
        out, carry = engine.render_chunk(prepared, chunk, carry)
        frames.append(out)
    return np.concatenate(frames)


@pytest.mark.parametrize("model", MODELS)
def test_chunked_one_shot_and_resume(engine: LivePortraitEngine, model: str) -> None:
    prepared = engine.prepare(_inputs(), _params(motion_model=model))
    chunks = engine.plan(prepared)
    assert len(chunks) >= 3 and prepared.num_frames == 40
    chunked = _render(engine, prepared, chunks)
    one_shot = _render(engine, prepared, [ChunkSpec(0, 0, prepared.num_frames)])
    np.testing.assert_array_equal(chunked, one_shot)
    assert chunked.shape == (40, 64, 64, 3)
    assert np.abs(chunked[1:].astype(int) - chunked[:-1]).mean() > 0  # it moves

    # Resume: the first chunk, its carry through bytes (the job store), the rest in a fresh prepare.
    first, carry = engine.render_chunk(prepared, chunks[0], None)
    stored = ChunkCarry.from_bytes(carry.to_bytes())
    assert any(key.startswith("source.motion.") for key in stored.arrays)  # the model's window + RNG
    resumed_prepared = engine.prepare(_inputs(), _params(motion_model=model))
    rest = _render_from(engine, resumed_prepared, chunks[1:], stored)
    np.testing.assert_array_equal(np.concatenate([first, rest]), chunked)


def test_other_fps_resamples_and_resumes(engine: LivePortraitEngine) -> None:
    # The models' 25 fps motion, resampled to 30 fps (models.motion.source), chunk by chunk and resumed.
    prepared = engine.prepare(_inputs(), _params(fps=30.0, motion_model="ditto"))
    assert prepared.num_frames == 48 and prepared.fps == 30.0
    chunks = engine.plan(prepared)
    assert len(chunks) >= 3
    chunked = _render(engine, prepared, chunks)
    np.testing.assert_array_equal(chunked, _render(engine, prepared, [ChunkSpec(0, 0, 48)]))
    first, carry = engine.render_chunk(prepared, chunks[0], None)
    stored = ChunkCarry.from_bytes(carry.to_bytes())
    assert "source.resample.next" in stored.arrays
    rest = _render_from(
        engine, engine.prepare(_inputs(), _params(fps=30.0, motion_model="ditto")), chunks[1:], stored
    )
    np.testing.assert_array_equal(np.concatenate([first, rest]), chunked)
    # frame 0 is the 25 fps job's frame 0; frame 6 (0.2 s) is its frame 5
    native = engine.prepare(_inputs(), _params(motion_model="ditto"))
    at25, _ = native.motion.frames(0, 6, None)
    at30, _ = prepared.motion.frames(0, 7, None)
    np.testing.assert_array_equal(at30.exp[[0, 6]], at25.exp[[0, 5]])


def _render_from(
    engine: LivePortraitEngine, prepared: LivePortraitPrepared, chunks: list[ChunkSpec], carry: ChunkCarry
) -> np.ndarray:
    frames = []
    for chunk in chunks:
        out, carry = engine.render_chunk(prepared, chunk, carry)
        frames.append(out)
    return np.concatenate(frames)


def _keypoints(engine: LivePortraitEngine, prepared: LivePortraitPrepared) -> np.ndarray:
    frames, _ = prepared.motion.frames(0, prepared.num_frames, None)
    kp = engine.pipeline.driving_keypoints(
        prepared.source, frames, prepared.motion.reference, RetargetSettings(stitching=False)
    )
    return kp.cpu().numpy()


@pytest.mark.parametrize("model", MODELS)
def test_head_distance_brings_the_head_closer(engine: LivePortraitEngine, model: str) -> None:
    base = _keypoints(engine, engine.prepare(_inputs(0.8), _params(motion_model=model)))
    near = _keypoints(engine, engine.prepare(_inputs(0.8), _params(motion_model=model, head_distance=1.5)))

    def spread(kp: np.ndarray) -> np.ndarray:
        xy = kp[..., :2]
        return np.sqrt(((xy - xy.mean(axis=1, keepdims=True)) ** 2).sum(-1).mean(-1))

    np.testing.assert_allclose(spread(near) / spread(base), 1.5, rtol=1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_gaze_moves_the_eyeballs_right(engine: LivePortraitEngine, model: str) -> None:
    prepared = engine.prepare(_inputs(0.8), _params(motion_model=model))
    right = engine.prepare(_inputs(0.8), _params(motion_model=model, gaze=[20.0, 0.0]))
    forward, _ = prepared.motion.frames(0, 20, None)
    looking, _ = right.motion.frames(0, 20, None)
    # Ditto's gaze offsets on keypoints 11 and 15 (x): positive x moves both eyeballs to the image's right
    assert np.all(looking.exp[:, [11, 15], 0] > forward.exp[:, [11, 15], 0])
    others = [k for k in range(21) if k not in (11, 15)]
    np.testing.assert_array_equal(looking.exp[:, others], forward.exp[:, others])
    frames_a = _render(engine, prepared, [ChunkSpec(0, 0, prepared.num_frames)])
    frames_b = _render(engine, right, [ChunkSpec(0, 0, right.num_frames)])
    assert np.abs(frames_a.astype(int) - frames_b).mean() > 0


def test_emotion_changes_dittos_motion(engine: LivePortraitEngine) -> None:
    neutral = engine.prepare(_inputs(0.8), _params(motion_model="ditto"))
    happy = engine.prepare(_inputs(0.8), _params(motion_model="ditto", emotion="happy"))
    a, _ = neutral.motion.frames(0, 20, None)
    b, _ = happy.motion.frames(0, 20, None)
    assert not np.array_equal(a.exp, b.exp)


def test_refusals_at_prepare(one_torch_thread: None) -> None:
    only_ditto = tiny_engine(seed=0, face_analyzer=SyntheticFaceAnalyzer(), motion_models=("ditto",))
    assert only_ditto.motion_models == ("ditto",)
    with pytest.raises(InvalidInput, match=r'motion_model "joyvasa" is not loaded.*loaded: ditto') as error:
        only_ditto.prepare(_inputs(0.4), _params(motion_model="joyvasa"))
    assert error.value.code == "invalid_params"
    none = tiny_engine(seed=0, face_analyzer=SyntheticFaceAnalyzer(), motion_models=())
    with pytest.raises(InvalidInput, match="loaded: none"):
        none.prepare(_inputs(0.4), _params(motion_model="ditto"))
    # the procedural default needs no motion model
    assert none.prepare(_inputs(0.4), _params()).num_frames == 10


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"emotion": "happy"}, "emotion"),
        ({"gaze": [5.0, 0.0]}, "gaze"),
        ({"motion_model": "joyvasa", "emotion": "sad"}, "emotion"),
        ({"motion_model": "joyvasa", "steps": 10}, "steps"),
        ({"motion_model": "joyvasa", "eye_open": 0.5}, "eye_open"),
        ({"motion_model": "ditto", "head_motion": "still"}, "head_motion"),
        ({"motion_model": "ditto", "sway_degrees": 5.0}, "sway_degrees"),
        ({"motion_model": "ditto", "blink": False}, "blink"),
        ({"motion_model": "ditto", "gaze": [40.0, 0.0]}, "gaze"),
        ({"motion_model": "ditto", "head_distance": 3.0}, "head_distance"),
    ],
)
def test_options_refused(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput, match=field) as error:
        validate_options(LivePortraitOptions, options, driving_video=False)
    assert error.value.code == "invalid_params"


def test_driving_video_with_a_motion_model_is_refused() -> None:
    with pytest.raises(InvalidInput, match="head_motion"):
        validate_options(LivePortraitOptions, {"motion_model": "ditto"}, driving_video=True)


def test_stored_options_validate_again() -> None:
    # The API stores the options with every default filled in; the worker validates them again.
    for raw in ({}, {"motion_model": "ditto", "gaze": [3.0, -2.0]}, {"motion_model": "joyvasa"}):
        stored = validate_options(LivePortraitOptions, raw, driving_video=False).model_dump(mode="json")
        again = validate_options(LivePortraitOptions, stored, driving_video=False)
        assert again.model_dump(mode="json") == stored


def test_worker_refuses_to_start_without_the_motion_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as error:
        LivePortraitEngine(modules=tiny_modules(0), motion_models=["ditto"], weights_dir=tmp_path)
    for path in MOTION_FILES["ditto"]:
        assert path in str(error.value)
    assert "JoyVASA/motion_generator" not in str(error.value)
    with pytest.raises(ValueError, match="unknown motion model"):
        LivePortraitEngine(modules=tiny_modules(0), motion_models=["sadtalker"], weights_dir=tmp_path)
    with pytest.raises(WeightsError, match="weights_dir"):
        LivePortraitEngine(modules=tiny_modules(0), motion_models=["joyvasa"])
