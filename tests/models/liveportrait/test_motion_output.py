"""The liveportrait engine's motion as a job output (``outputs=["video", "motion"]``), tiny random weights."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from models.engine import OutputEngine, RenderInputs, RenderParams
from models.liveportrait.engine import LivePortraitEngine, LivePortraitPrepared, tiny_engine
from models.liveportrait.options import LivePortraitOptions
from models.liveportrait.testing import SyntheticFaceAnalyzer
from models.motion.kp_info import read_motion_npz
from models.options import validate_options
from tests.media import tone_samples


@pytest.fixture(scope="module")
def engine(one_torch_thread: None) -> LivePortraitEngine:
    return tiny_engine(seed=0, face_analyzer=SyntheticFaceAnalyzer(), chunk_seconds=0.4, batch_size=4)


def _prepare(engine: LivePortraitEngine, **options: object) -> LivePortraitPrepared:
    rng = np.random.default_rng(0)
    image = (rng.random((160, 128, 3)) * 200 + 40).astype(np.uint8)
    validated = validate_options(LivePortraitOptions, dict(options), driving_video=False)
    params: RenderParams[Any] = RenderParams(
        validated, fps=25.0, size=64, seed=3, outputs=("video", "motion")
    )
    return engine.prepare(RenderInputs(image=image, audio=tone_samples(1.2)), params)


def _render_with_motion(
    engine: LivePortraitEngine, prepared: LivePortraitPrepared
) -> tuple[npt.NDArray[np.uint8], dict[str, npt.NDArray[Any]]]:
    frames, parts, carry = [], [], None
    for chunk in engine.plan(prepared):
        out, carry, outputs = engine.render_chunk_outputs(prepared, chunk, carry, frozenset({"motion"}))
        frames.append(out)
        parts.append(outputs["motion"])
        assert all(len(array) == chunk.num_frames for array in outputs["motion"].values())
    return np.concatenate(frames), {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def test_the_engine_makes_motion_and_its_frames_are_render_chunks(engine: LivePortraitEngine) -> None:
    assert isinstance(engine, OutputEngine)
    prepared = _prepare(engine)
    frames, _ = _render_with_motion(engine, prepared)
    plain, carry = [], None
    for chunk in engine.plan(prepared):
        out, carry = engine.render_chunk(prepared, chunk, carry)
        plain.append(out)
    assert np.array_equal(frames, np.concatenate(plain))


@pytest.mark.parametrize(
    ("options", "applied", "model"),
    [
        ({}, "relative", "procedural"),
        ({"head_motion": "still"}, "relative", "still"),
        ({"motion_model": "ditto"}, "relative", "ditto"),
    ],
)
def test_the_motion_file_reads_back_with_every_frame(
    engine: LivePortraitEngine, options: dict[str, object], applied: str, model: str
) -> None:
    prepared = _prepare(engine, **options)
    _, arrays = _render_with_motion(engine, prepared)
    buffer = io.BytesIO()
    engine.write_output(prepared, "motion", arrays, buffer)
    data = buffer.getvalue()
    motion, meta = read_motion_npz(data)
    assert motion.num_frames == prepared.num_frames == 30
    assert meta["fps"] == 25.0 and meta["model"] == model and meta["num_frames"] == 30
    assert np.array_equal(motion.exp, arrays["exp"]) and np.array_equal(motion.yaw, arrays["yaw"])
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        names = set(archive.files)
    if prepared.motion.reference is not None:
        assert meta["applied"] == applied and {"ref_exp", "ref_yaw"} <= names
    else:
        assert meta["applied"] == "absolute" and not any(name.startswith("ref_") for name in names)


def test_motion_differs_between_frames_when_the_audio_drives_it(engine: LivePortraitEngine) -> None:
    _, arrays = _render_with_motion(engine, _prepare(engine))
    # The procedural source moves the head and the lips (through the lip ratio), frame by frame.
    assert float(np.ptp(arrays["yaw"])) > 0 and float(np.ptp(arrays["lip_ratio"])) > 0


def test_an_output_it_does_not_make_is_refused(engine: LivePortraitEngine) -> None:
    prepared = _prepare(engine)
    with pytest.raises(ValueError, match="no 'landmarks' output"):
        engine.write_output(prepared, "landmarks", {}, io.BytesIO())
