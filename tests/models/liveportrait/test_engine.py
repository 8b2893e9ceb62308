"""The liveportrait engine on tiny random weights: chunking, resume, sources, options, weights check."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from core.errors import InvalidInput, WeightsError
from models.engine import ChunkCarry, ChunkSpec, RenderInputs, RenderParams
from models.liveportrait.engine import LivePortraitEngine, LivePortraitPrepared, check_weights, tiny_engine
from models.liveportrait.options import LivePortraitOptions
from models.liveportrait.testing import SyntheticFaceAnalyzer
from models.options import validate_options
from tests.media import tone_samples

FPS = 10.0


@pytest.fixture(scope="module")
def engine(one_torch_thread: None) -> LivePortraitEngine:
    return tiny_engine(seed=0, face_analyzer=SyntheticFaceAnalyzer(), chunk_seconds=0.5, batch_size=4)


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((160, 128, 3)) * 200 + 40).astype(np.uint8)


def _inputs(seconds: float = 1.2, video: bytes | None = None) -> RenderInputs:
    return RenderInputs(image=_image(), audio=tone_samples(seconds), driving_video=video)


def _params(
    video: bool = False, framing: str = "crop", **options: object
) -> RenderParams[LivePortraitOptions]:
    validated = validate_options(LivePortraitOptions, dict(options), driving_video=video)
    return RenderParams(validated, fps=FPS, size=96, seed=3, framing=framing)  # type: ignore[arg-type]


def _render_all(engine: LivePortraitEngine, prepared: LivePortraitPrepared) -> np.ndarray:
    frames, carry = [], None
    for chunk in engine.plan(prepared):
        out, carry = engine.render_chunk(prepared, chunk, carry)
        frames.append(out)
    return np.concatenate(frames)


def _video(num_frames: int, fps: int = 10, dark: tuple[int, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(5)
    base = (rng.random((96, 96, 3)) * 200 + 40).astype(np.uint8)
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 96, "yuv420p"
        for index in range(num_frames):
            image = np.zeros_like(base) if index in dark else np.roll(base, 3 * index, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_chunked_equals_one_shot_and_frames_move(engine: LivePortraitEngine) -> None:
    prepared = engine.prepare(_inputs(), _params())
    assert (prepared.num_frames, prepared.height, prepared.width) == (12, 96, 96)
    chunks = engine.plan(prepared)
    assert [c.num_frames for c in chunks] == [4, 4, 4]  # whole batches of 4
    chunked = _render_all(engine, prepared)
    one_shot, _ = engine.render_chunk(prepared, ChunkSpec(index=0, start=0, stop=12), None)
    # a chunk that ends inside a batch: its last batch is padded, the frames are those of the plan's
    head, _ = engine.render_chunk(prepared, ChunkSpec(index=0, start=0, stop=6), None)
    np.testing.assert_array_equal(head, one_shot[:6])
    assert chunked.shape == (12, 96, 96, 3) and chunked.dtype == np.uint8
    np.testing.assert_array_equal(chunked, one_shot)
    assert np.abs(chunked[0].astype(int) - chunked[6].astype(int)).max() > 0  # the procedural source moves


def test_resume_from_a_stored_carry_equals_uninterrupted(engine: LivePortraitEngine) -> None:
    uninterrupted = _render_all(engine, engine.prepare(_inputs(), _params()))
    first = engine.prepare(_inputs(), _params())
    chunks = engine.plan(first)
    head, carry = engine.render_chunk(first, chunks[0], None)
    stored = carry.to_bytes()
    # another process: a fresh engine, prepare again, continue from the stored carry
    other = tiny_engine(seed=0, face_analyzer=SyntheticFaceAnalyzer(), chunk_seconds=0.5, batch_size=4)
    again = other.prepare(_inputs(), _params())
    frames, carry = [head], ChunkCarry.from_bytes(stored)
    for chunk in chunks[1:]:
        out, carry = other.render_chunk(again, chunk, carry)
        frames.append(out)
    np.testing.assert_array_equal(np.concatenate(frames), uninterrupted)


def test_carry_must_match_the_chunk(engine: LivePortraitEngine) -> None:
    prepared = engine.prepare(_inputs(), _params())
    chunks = engine.plan(prepared)
    with pytest.raises(ValueError, match="no carry"):
        engine.render_chunk(prepared, chunks[1], None)
    _, carry = engine.render_chunk(prepared, chunks[0], None)
    with pytest.raises(ValueError, match="carry is for frame 4"):
        engine.render_chunk(prepared, chunks[2], carry)


def test_driving_video_drives_and_is_chunk_exact(engine: LivePortraitEngine) -> None:
    video = _video(8, dark=(3,))
    prepared = engine.prepare(_inputs(video=video), _params(video=True))
    assert prepared.motion.reference is not None and prepared.motion.num_frames == 12
    chunked = _render_all(engine, prepared)
    one_shot, _ = engine.render_chunk(prepared, ChunkSpec(index=0, start=0, stop=12), None)
    np.testing.assert_array_equal(chunked, one_shot)
    still = _render_all(engine, engine.prepare(_inputs(), _params(head_motion="still")))
    assert np.abs(chunked.astype(int) - still.astype(int)).max() > 0
    # retargeting only: eyes/lips from the video, pose and expression the portrait's
    retarget = engine.prepare(
        _inputs(video=video), _params(video=True, eye_retargeting=True, lip_retargeting=True)
    )
    frames, _ = retarget.motion.frames(0, 4, None)
    assert frames.eye_ratio is not None and frames.lip_ratio is not None
    assert np.all(frames.yaw == frames.yaw[0])


def test_still_frames_are_all_the_same(engine: LivePortraitEngine) -> None:
    frames = _render_all(engine, engine.prepare(_inputs(0.5), _params(head_motion="still"))).astype(int)
    assert all(np.abs(frame - frames[0]).max() <= 1 for frame in frames)  # rounding by batch slot only


def test_full_framing_pastes_back_into_the_photo(engine: LivePortraitEngine) -> None:
    small_face = tiny_engine(seed=0, face_analyzer=SyntheticFaceAnalyzer(extent=0.2), batch_size=4)
    prepared = small_face.prepare(_inputs(0.3), _params(framing="full"))
    assert (prepared.height, prepared.width) == (160, 128)
    frames, _ = small_face.render_chunk(prepared, small_face.plan(prepared)[0], None)
    assert frames.shape == (3, 160, 128, 3)
    np.testing.assert_array_equal(frames[0, :8, :8], _image()[:8, :8])  # far from the face: the photo
    assert (
        np.abs(frames[0, 70:90, 54:74].astype(int) - _image()[70:90, 54:74]).max() > 0
    )  # the face: rendered


@pytest.mark.parametrize(
    ("options", "video", "message"),
    [
        ({"head_motion": "driving"}, False, "needs a driving_video"),
        ({"head_motion": "audio"}, True, "would ignore it"),
        ({"eye_retargeting": True}, False, "need head_motion"),
        ({"sway_degrees": 50}, False, "engine_options.sway_degrees"),
        ({"nonsense": 1}, False, "engine_options.nonsense"),
    ],
)
def test_options_are_checked_at_submit(options: dict[str, object], video: bool, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as error:
        validate_options(LivePortraitOptions, options, driving_video=video)
    assert error.value.code == "invalid_params"


def test_defaults_follow_the_inputs() -> None:
    assert validate_options(LivePortraitOptions, {}, driving_video=True).head_motion == "driving"
    assert validate_options(LivePortraitOptions, {}, driving_video=False).head_motion == "audio"
    assert LivePortraitOptions().head_motion == "audio"  # no context: the schema's default


def test_the_engine_checks_options_against_the_inputs_again(engine: LivePortraitEngine) -> None:
    driving = RenderParams(LivePortraitOptions(head_motion="driving"), fps=FPS, size=96)
    with pytest.raises(InvalidInput, match="needs a driving_video") as error:
        engine.prepare(_inputs(0.3), driving)
    assert error.value.code == "invalid_params"
    with pytest.raises(InvalidInput, match="size must be in"):
        engine.prepare(_inputs(0.3), RenderParams(LivePortraitOptions(), size=32))


def test_bad_driving_videos_are_input_errors(engine: LivePortraitEngine) -> None:
    with pytest.raises(InvalidInput, match="cannot decode") as error:
        engine.prepare(_inputs(0.3, video=b"not a video"), _params(video=True))
    assert error.value.code == "invalid_driving_video"
    with pytest.raises(InvalidInput, match="no face"):
        engine.prepare(_inputs(0.3, video=_video(3, dark=(0, 1, 2))), _params(video=True))


def test_no_face_in_the_portrait(engine: LivePortraitEngine) -> None:
    dark = RenderInputs(image=np.zeros((64, 64, 3), np.uint8), audio=tone_samples(0.3))
    with pytest.raises(InvalidInput) as error:
        engine.prepare(dark, _params())
    assert error.value.code == "no_face_found"


def test_missing_weights_are_named(tmp_path: Path) -> None:
    (tmp_path / "base_models").mkdir()
    (tmp_path / "base_models" / "motion_extractor.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"missing base_models/appearance_feature_extractor\.pth") as error:
        check_weights(tmp_path)
    assert "motion_extractor" not in str(error.value)
    with pytest.raises(WeightsError, match="stitching_retargeting_module"):
        LivePortraitEngine(weights_dir=tmp_path)
    with pytest.raises(WeightsError, match="needs weights_dir"):
        LivePortraitEngine()


def test_the_worker_refuses_to_start_without_the_files(tmp_path: Path) -> None:
    from core.settings import Settings
    from worker.boot import load_engine

    (tmp_path / "base_models").mkdir()
    with pytest.raises(SystemExit) as caught:
        load_engine(Settings(engine="liveportrait", weights_dir=tmp_path, device="cpu"))
    message = str(caught.value)
    assert "liveportrait" in message and "base_models/warping_module.pth" in message
    assert "stitching_retargeting_module.pth" in message
    with pytest.raises(SystemExit, match="needs weights_dir"):
        load_engine(Settings(engine="liveportrait", device="cpu"))
