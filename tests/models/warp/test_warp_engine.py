"""The warp engine's contract: prepared geometry, chunking with carries, determinism, input errors."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from core.errors import InvalidInput
from models.engine import (
    ChunkCarry,
    ChunkSpec,
    RenderInputs,
    RenderParams,
    even_chunks,
    make_params,
    num_frames_for,
)
from models.face import MediaPipeFaceAnalyzer
from models.registry import build_engine
from models.warp.engine import WarpEngine, WarpPrepared
from models.warp.options import WarpOptions


def params(**values: object) -> RenderParams[WarpOptions]:
    return make_params(WarpOptions, **values)


@pytest.fixture(scope="module")
def engine(analyzer: MediaPipeFaceAnalyzer) -> WarpEngine:
    return WarpEngine(analyzer=analyzer, device="cuda:0", weights_dir="/nowhere")


@pytest.fixture(scope="module")
def inputs(portrait: np.ndarray, speech: np.ndarray) -> RenderInputs:
    return RenderInputs(image=portrait, audio=speech[: int(3.3 * 16000)])


def render(
    engine: WarpEngine, prepared: WarpPrepared, chunks: list[ChunkSpec], via_bytes: bool = False
) -> np.ndarray:
    frames, carry = [], None
    for chunk in chunks:
        out, carry = engine.render_chunk(prepared, chunk, carry)
        assert out.shape == (chunk.num_frames, prepared.height, prepared.width, 3) and out.dtype == np.uint8
        frames.append(out)
        if via_bytes:
            carry = ChunkCarry.from_bytes(carry.to_bytes())
    return np.concatenate(frames, axis=0)


def test_registered_and_protocol(analyzer: MediaPipeFaceAnalyzer) -> None:
    built = build_engine("warp", device="cpu", weights_dir=None)
    assert isinstance(built, WarpEngine) and built.name == "warp" and built.options_model is WarpOptions
    built.warmup()


def test_prepared_geometry(engine: WarpEngine, inputs: RenderInputs) -> None:
    prepared = engine.prepare(inputs, params(fps=30, size=160))
    assert prepared.num_frames == num_frames_for(inputs.duration_s, 30) == 99
    assert (prepared.fps, prepared.height, prepared.width) == (30.0, 160, 160)
    chunks = engine.plan(prepared)
    assert chunks == even_chunks(99, 60)
    assert chunks[0].start == 0 and chunks[-1].stop == 99


def test_chunked_equals_one_shot_across_carry_bytes(engine: WarpEngine, inputs: RenderInputs) -> None:
    prepared = engine.prepare(inputs, params(size=128, seed=3, head_motion=1.0))
    one_shot = render(engine, prepared, [ChunkSpec(0, 0, prepared.num_frames)])
    for chunk_frames in (7, 25, 40):
        chunked = render(engine, prepared, even_chunks(prepared.num_frames, chunk_frames), via_bytes=True)
        assert np.array_equal(chunked, one_shot), chunk_frames
    # A resumed job: a new engine and a new prepare (same inputs) continue from a stored carry.
    _, carry = engine.render_chunk(prepared, ChunkSpec(0, 0, 30), None)
    resumed_engine = WarpEngine(analyzer=MediaPipeFaceAnalyzer())
    resumed = resumed_engine.prepare(inputs, params(size=128, seed=3, head_motion=1.0))
    rest, _ = resumed_engine.render_chunk(
        resumed, ChunkSpec(1, 30, prepared.num_frames), ChunkCarry.from_bytes(carry.to_bytes())
    )
    assert np.array_equal(rest, one_shot[30:])
    # Frames move: the portrait talks.
    assert np.abs(one_shot[1:].astype(int) - one_shot[:-1].astype(int)).max() > 50


def test_seed_sets_the_head_motion(engine: WarpEngine, inputs: RenderInputs) -> None:
    chunk = ChunkSpec(0, 0, 50)
    runs = {
        seed: engine.render_chunk(engine.prepare(inputs, params(size=96, seed=seed)), chunk, None)[0]
        for seed in (1, 1, 2)
    }
    again = engine.render_chunk(engine.prepare(inputs, params(size=96, seed=1)), chunk, None)[0]
    assert np.array_equal(runs[1], again)
    assert not np.array_equal(runs[1], runs[2])


def test_still_head_keeps_the_background(engine: WarpEngine, inputs: RenderInputs) -> None:
    prepared = engine.prepare(inputs, params(size=128, head_motion=0.0))
    frames = render(engine, prepared, engine.plan(prepared))
    corners = frames[:, :24, :24].astype(int)
    assert np.abs(corners - prepared.crop[None, :24, :24].astype(int)).max() <= 1
    carry = engine.render_chunk(prepared, ChunkSpec(0, 0, 40), None)[1]
    assert not carry.arrays["head"].any()


def test_full_framing_keeps_the_photo_aspect(
    engine: WarpEngine, heldout_portrait: np.ndarray, speech: np.ndarray
) -> None:
    inputs = RenderInputs(image=heldout_portrait, audio=speech[:16000])
    prepared = engine.prepare(inputs, params(size=128, framing="full"))
    assert (prepared.height, prepared.width) == (480, 300)
    frames = render(engine, prepared, engine.plan(prepared))
    assert frames.shape == (25, 480, 300, 3)
    # Far from the face the video is the photo itself.
    assert np.abs(frames[:, 420:, :60].astype(int) - heldout_portrait[None, 420:, :60].astype(int)).max() <= 2
    big = np.ascontiguousarray(np.repeat(np.repeat(heldout_portrait, 3, axis=0), 3, axis=1))  # 1440 x 900
    prepared = engine.prepare(RenderInputs(image=big, audio=speech[:8000]), params(size=128, framing="full"))
    assert (prepared.height, prepared.width) == (1024, 640)


def test_input_errors(engine: WarpEngine, speech: np.ndarray, portrait: np.ndarray) -> None:
    blank = np.full((200, 300, 3), 90, np.uint8)
    with pytest.raises(InvalidInput) as error:
        engine.prepare(RenderInputs(image=blank, audio=speech[:16000]), params(size=128))
    assert error.value.code == "no_face_found"
    with pytest.raises(InvalidInput) as error:
        engine.prepare(RenderInputs(image=portrait, audio=speech[:16000]), params(size=128, face_index=1))
    assert error.value.code == "face_not_found"
    with pytest.raises(InvalidInput) as error:
        engine.prepare(RenderInputs(image=portrait, audio=speech[:16000]), params(size=16))
    assert error.value.code == "invalid_params"
    for head_motion in (1.5, -0.1, "wild", "driving"):
        with pytest.raises(ValidationError):
            WarpOptions.model_validate({"head_motion": head_motion})


def test_carry_must_match_the_chunk(engine: WarpEngine, inputs: RenderInputs) -> None:
    prepared = engine.prepare(inputs, params(size=64))
    _, carry = engine.render_chunk(prepared, ChunkSpec(0, 0, 10), None)
    with pytest.raises(ValueError, match="carry is for frame 10"):
        engine.render_chunk(prepared, ChunkSpec(2, 20, 30), carry)


def test_head_motion_left_unset_is_the_documented_default() -> None:
    from models.warp.options import DEFAULT_HEAD_MOTION

    assert WarpOptions().head_motion_amount == DEFAULT_HEAD_MOTION == 0.5
    assert WarpOptions(head_motion=0.2).head_motion_amount == 0.2
    assert WarpOptions(head_motion="still").head_motion_amount == 0.0
