"""VExpressEngine behind the engine seam, on tiny random weights (CPU, fp32, 2 steps, 32x32)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from core.errors import InvalidInput, WeightsError
from models.engine import ChunkCarry, RenderInputs, RenderParams, make_params
from models.vexpress.engine import VExpressEngine, missing_weight_files, resolve_options
from models.vexpress.options import VExpressOptions

ASSETS = Path(__file__).resolve().parents[2] / "assets"
SIZE = 32


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def params(**overrides: object) -> RenderParams[VExpressOptions]:
    values: dict[str, object] = {
        "fps": 10.0,
        "size": SIZE,
        "seed": 7,
        "head_motion": "still",
        "context_frames": 6,
        "motion_frames": 2,
        "num_inference_steps": 2,
    }
    values.update(overrides)
    return make_params(VExpressOptions, **values)


def inputs(seconds: float = 1.5) -> RenderInputs:
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    audio = np.random.default_rng(1).normal(0, 0.1, int(16000 * seconds)).astype(np.float32)
    return RenderInputs(image=image, audio=audio)


# options --------------------------------------------------------------------------------------


def test_the_options_default_to_the_reference() -> None:
    options = resolve_options(make_params(VExpressOptions), has_driving_video=False)
    assert (options.num_inference_steps, options.guidance_scale) == (25, 3.5)
    assert (options.reference_attention_weight, options.audio_attention_weight) == (0.95, 3.0)
    assert (options.context_frames, options.motion_frames, options.continuity) == (24, 4, "motion_frames")
    assert (options.head_motion, options.retarget) == ("still", "offset")


@pytest.mark.parametrize(
    ("head_motion", "has_video", "expected"),
    [("still", False, ("still", 0.0)), (0.0, False, ("still", 0.0)), (0.3, False, ("sway", 0.3)),
     ("sway", False, ("sway", 0.5)), (None, True, ("driving", 0.0)), ("driving", True, ("driving", 0.0)),
     ("still", True, ("still", 0.0)), (None, False, ("still", 0.0))],
)  # fmt: skip
def test_resolve_options_maps_head_motion(
    head_motion: object, has_video: bool, expected: tuple[str, float]
) -> None:
    options = resolve_options(
        make_params(VExpressOptions, head_motion=head_motion), has_driving_video=has_video
    )
    assert (options.head_motion, options.sway_amplitude) == expected


@pytest.mark.parametrize(
    "overrides",
    [{"context_frames": 8, "motion_frames": 8}, {"context_frames": 40}, {"num_inference_steps": 0},
     {"continuity": "blend"}, {"head_motion": 1.5}, {"retarget": "mirror"}, {"guidance_scale": -1.0},
     {"colour": "red"}],
)  # fmt: skip
def test_the_options_model_refuses_invalid_options(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VExpressOptions.model_validate(overrides)


def test_resolve_options_refuses_what_the_inputs_or_the_model_cannot_serve() -> None:
    for given, has_video, max_context in (
        ({"head_motion": "driving"}, False, 32),
        ({"size": 60}, False, 32),
        ({"context_frames": 24}, False, 16),  # a checkpoint with shorter motion modules
    ):
        with pytest.raises(InvalidInput) as caught:
            resolve_options(
                make_params(VExpressOptions, **given),
                has_driving_video=has_video,
                max_context_frames=max_context,
            )
        assert caught.value.code == "invalid_params"
    with pytest.raises(ValidationError, match="needs a driving_video"):
        VExpressOptions.model_validate({"head_motion": "driving"}, context={"driving_video": False})


# weights --------------------------------------------------------------------------------------


def test_an_incomplete_weights_dir_is_refused_with_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / "sd-vae-ft-mse").mkdir()
    (tmp_path / "sd-vae-ft-mse" / "config.json").write_text("{}")
    missing = missing_weight_files(tmp_path)
    assert "sd-vae-ft-mse/config.json" not in " ".join(missing)
    assert any("diffusion_pytorch_model.safetensors" in name for name in missing)
    assert "wav2vec2-base-960h/preprocessor_config.json" in missing
    with pytest.raises(WeightsError, match=r"preprocessor_config\.json"):
        VExpressEngine(weights_dir=tmp_path, device="cpu")
    with pytest.raises(WeightsError, match="weights directory"):
        VExpressEngine(device="cpu")


# rendering ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> VExpressEngine:
    from models.vexpress.testing import FixedKeypointAnalyzer, tiny_engine

    return tiny_engine(seed=0, face_analyzer=FixedKeypointAnalyzer())


def render_all(
    engine: VExpressEngine, job_inputs: RenderInputs, job_params: RenderParams
) -> tuple[np.ndarray, list[bytes]]:
    prepared = engine.prepare(job_inputs, job_params)
    frames, carries, carry = [], [], None
    for chunk in engine.plan(prepared):
        chunk_frames, carry = engine.render_chunk(prepared, chunk, carry)
        assert chunk_frames.shape == (chunk.num_frames, prepared.height, prepared.width, 3)
        frames.append(chunk_frames)
        carries.append(carry.to_bytes())
    return np.concatenate(frames), carries


def test_plan_covers_every_frame_with_chunks_of_new_frames(engine: VExpressEngine) -> None:
    prepared = engine.prepare(inputs(1.5), params())
    assert (prepared.num_frames, prepared.height, prepared.width, prepared.fps) == (15, SIZE, SIZE, 10.0)
    chunks = engine.plan(prepared)
    assert [(c.start, c.stop) for c in chunks] == [(0, 6), (6, 10), (10, 14), (14, 15)]
    assert [c.index for c in chunks] == [0, 1, 2, 3]


def test_engine_chunks_equal_the_one_shot_pipeline(engine: VExpressEngine) -> None:
    from models.face import crop_around_face
    from models.vexpress.kps import still_kps, transform_kps

    job_inputs, job_params = inputs(1.5), params()
    frames, _ = render_all(engine, job_inputs, job_params)
    face = engine.face_analyzer.detect(job_inputs.image)[0]
    crop = crop_around_face(job_inputs.image, face, SIZE)
    kps = still_kps(transform_kps(face.keypoints[:3], crop.matrix), 15)
    for continuity in ("motion_frames", "overlap_average"):
        one_shot = engine.pipeline(
            crop.image, kps, job_inputs.audio, num_inference_steps=2, context_frames=6, motion_frames=2,
            continuity=continuity, generator=torch.Generator().manual_seed(7),
        )  # fmt: skip
        chunked = (
            frames
            if continuity == "motion_frames"
            else render_all(engine, job_inputs, params(continuity=continuity))[0]
        )
        np.testing.assert_array_equal(chunked, one_shot)


def test_single_window_clip_is_the_same_in_both_continuity_modes(engine: VExpressEngine) -> None:
    motion, _ = render_all(engine, inputs(0.5), params(continuity="motion_frames"))
    overlap, _ = render_all(engine, inputs(0.5), params(continuity="overlap_average"))
    assert motion.shape == (5, SIZE, SIZE, 3)
    np.testing.assert_array_equal(motion, overlap)


def test_carry_holds_the_last_motion_latents_and_the_noise_state(engine: VExpressEngine) -> None:
    prepared = engine.prepare(inputs(1.0), params())
    chunks = engine.plan(prepared)
    _, carry = engine.render_chunk(prepared, chunks[0], None)
    restored = ChunkCarry.from_bytes(carry.to_bytes())
    assert restored.arrays["motion_latents"].shape == (1, 4, 2, SIZE // 8, SIZE // 8)
    assert restored.arrays["generator_state"].dtype == np.uint8
    assert restored.meta["continuity"] == "motion_frames"


def test_a_resumed_job_reproduces_the_uninterrupted_frames(engine: VExpressEngine) -> None:
    from models.vexpress.testing import FixedKeypointAnalyzer, tiny_engine

    job_inputs, job_params = inputs(1.5), params(head_motion=0.8)
    uninterrupted, carries = render_all(engine, job_inputs, job_params)
    # a new process: a fresh engine (same weights), prepare again, continue after chunk 1
    fresh = tiny_engine(seed=0, face_analyzer=FixedKeypointAnalyzer())
    prepared = fresh.prepare(job_inputs, job_params)
    chunks = fresh.plan(prepared)
    carry = ChunkCarry.from_bytes(carries[1])
    resumed = []
    for chunk in chunks[2:]:
        chunk_frames, carry = fresh.render_chunk(prepared, chunk, carry)
        resumed.append(chunk_frames)
    np.testing.assert_array_equal(np.concatenate(resumed), uninterrupted[chunks[2].start :])


def test_seed_changes_the_frames_and_head_motion_the_keypoints(engine: VExpressEngine) -> None:
    base, _ = render_all(engine, inputs(0.5), params())
    assert not np.array_equal(base, render_all(engine, inputs(0.5), params(seed=8))[0])
    still = engine.prepare(inputs(2.0), params()).kps_sequence
    sway = engine.prepare(inputs(2.0), params(head_motion=1.0)).kps_sequence
    np.testing.assert_allclose(sway[0], still[0], atol=1e-4)
    assert np.abs(sway - still).max() > 0.2


def test_full_framing_pastes_the_crop_back_into_the_photo(engine: VExpressEngine) -> None:
    prepared = engine.prepare(inputs(0.3), params(framing="full"))
    assert (prepared.height, prepared.width) == (48, 40)
    frames, _ = engine.render_chunk(prepared, engine.plan(prepared)[0], None)
    assert frames.shape == (3, 48, 40, 3)


def test_a_chunk_after_the_first_needs_its_carry(engine: VExpressEngine) -> None:
    from core.errors import EngineFailure

    prepared = engine.prepare(inputs(1.0), params())
    with pytest.raises(EngineFailure):
        engine.render_chunk(prepared, engine.plan(prepared)[1], None)


def test_the_sample_portrait_renders_with_mediapipe() -> None:
    from PIL import Image

    from models.audio import load_audio
    from models.vexpress.testing import tiny_engine

    image = np.asarray(Image.open(ASSETS / "portrait.png").convert("RGB"))
    audio = load_audio(ASSETS / "speech.wav")[:8000]
    engine = tiny_engine(seed=0)
    prepared = engine.prepare(RenderInputs(image=image, audio=audio), params(size=48))
    kps = prepared.kps_sequence[0]
    assert (
        kps[0, 0] < kps[2, 0] < kps[1, 0] and kps[2, 1] > kps[0, 1]
    )  # eyes either side of and above the nose
    assert np.all((kps > 0) & (kps < 48))
    engine.warmup()
    frames, _ = engine.render_chunk(prepared, engine.plan(prepared)[0], None)
    assert frames.shape == (5, 48, 48, 3) and frames.dtype == np.uint8


def test_the_engine_satisfies_the_engine_protocol(engine: VExpressEngine) -> None:
    from models.registry import build_engine
    from models.vexpress.options import VExpressTinyOptions

    assert engine.name == "vexpress" and engine.options_model is VExpressTinyOptions
    from models.vexpress.testing import FixedKeypointAnalyzer

    tiny = build_engine(
        "vexpress-tiny", device="cpu", weights_dir=None, face_analyzer=FixedKeypointAnalyzer()
    )
    prepared = tiny.prepare(inputs(0.2), make_params(tiny.options_model, size=SIZE, fps=10.0))
    assert (prepared.num_frames, prepared.height, prepared.width) == (2, SIZE, SIZE)
    assert prepared.options.num_inference_steps == 2  # vexpress-tiny's own default


class SpotFaceAnalyzer:
    """Test analyzer: a face whose nose is the brightest pixel, eyes 8 px to each side and 10 px above."""

    def detect(self, image: np.ndarray) -> list[object]:
        from models.face import Face

        gray = image.astype(np.float32).sum(axis=2)
        if gray.max() < 300:
            return []
        y, x = (float(v) for v in np.unravel_index(int(gray.argmax()), gray.shape))
        keypoints = np.array(
            [[x - 8, y - 10], [x + 8, y - 10], [x, y], [x - 5, y + 8], [x + 5, y + 8]], np.float32
        )
        box = np.array([x - 12, y - 16, x + 12, y + 14], np.float32)
        return [Face(box, np.zeros((478, 3), np.float32), keypoints, 0.0, 0.0, 0.0, 0.0, 0.3)]


def test_a_driving_video_moves_the_keypoints_by_half_the_scaled_nose_motion() -> None:
    from models.vexpress.testing import tiny_engine
    from tests.models.vexpress.test_vexpress_kps import encode_moving_dot_video

    engine = tiny_engine(seed=0, face_analyzer=SpotFaceAnalyzer())
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[30:34, 30:34] = 255
    video = encode_moving_dot_video(num_frames=8, fps=10)  # the dot moves 4 px right per frame
    job_inputs = RenderInputs(image=image, audio=inputs(0.8).audio, driving_video=video)
    prepared = engine.prepare(job_inputs, params(head_motion=None))  # unset: the driving video
    still = engine.prepare(RenderInputs(image=image, audio=inputs(0.8).audio), params()).kps_sequence
    assert prepared.options.head_motion == "driving"
    np.testing.assert_allclose(prepared.kps_sequence[0], still[0], atol=1e-3)
    # offset retargeting: the portrait's keypoints move by minus half the nose motion, scaled
    # from the driving face (eye distance 16 px) to the crop's face
    shift = prepared.kps_sequence[:, 2, 0] - still[:, 2, 0]
    assert np.all(np.diff(shift) <= 1e-4) and shift[-1] < -1.0
    frames, _ = engine.render_chunk(prepared, engine.plan(prepared)[0], None)
    assert frames.shape == (6, SIZE, SIZE, 3)
    with pytest.raises(InvalidInput) as caught:
        engine.prepare(
            RenderInputs(image=image, audio=inputs(0.8).audio, driving_video=b"junk"),
            params(head_motion=None),
        )
    assert caught.value.code == "invalid_driving_video"


def test_an_engine_loaded_from_a_weights_dir_renders_the_same_frames(
    engine: VExpressEngine, tmp_path: Path
) -> None:
    from models.sd.configs import tiny_unet_config
    from models.vexpress.checkpoint import save_published
    from models.vexpress.configs import tiny_audio_projection_config, tiny_guider_config
    from models.vexpress.testing import FixedKeypointAnalyzer

    components = engine.pipeline.components
    weights = tmp_path / "weights"
    save_published(components.modules, weights, tiny_unet_config(), dtype=torch.float32)
    components.vae.save_pretrained(weights / "sd-vae-ft-mse")
    components.audio_encoder.save_pretrained(weights / "wav2vec2-base-960h")
    components.feature_extractor.save_pretrained(weights / "wav2vec2-base-960h")
    assert missing_weight_files(weights) == []
    options = {
        "device": "cpu",
        "dtype": "fp32",
        "face_analyzer": FixedKeypointAnalyzer(),
        "module_configs": {
            "guider_config": tiny_guider_config(),
            "audio_projection_config": tiny_audio_projection_config(),
        },
    }
    expected, _ = render_all(engine, inputs(0.8), params())
    np.testing.assert_array_equal(
        render_all(VExpressEngine(weights_dir=weights, **options), inputs(0.8), params())[0], expected
    )
    # our converted copy: made on the first boot, then enough without the pickled module files
    converted = tmp_path / "converted"
    VExpressEngine(weights_dir=weights, converted_dir=converted, **options)
    for published in (weights / "v-express").iterdir():
        published.unlink()
    assert missing_weight_files(weights, converted) == []
    reloaded = VExpressEngine(weights_dir=weights, converted_dir=converted, **options)
    # Same values; not the same frames bit for bit: the memory-mapped safetensors are not 64-byte
    # aligned, so CPU kernels round differently (1e-6), which the tiny UNet's 1-2-channel
    # GroupNorms amplify.
    for name, module in components.modules.items():
        loaded_state = getattr(reloaded.pipeline.components.modules, name).state_dict()
        assert all(torch.equal(value, loaded_state[key]) for key, value in module.state_dict().items())
    assert render_all(reloaded, inputs(0.8), params())[0].shape == expected.shape
    with pytest.raises(WeightsError, match=r"reference_net\.bin"):
        VExpressEngine(weights_dir=weights, **options)


def test_half_precision_renders_and_carries_float32_latents() -> None:
    from models.vexpress.testing import FixedKeypointAnalyzer, tiny_components

    half = VExpressEngine(
        device="cpu",
        dtype="bf16",
        components=tiny_components(seed=0, dtype=torch.bfloat16),
        face_analyzer=FixedKeypointAnalyzer(),
    )
    assert half.dtype == torch.bfloat16
    frames, carries = render_all(half, inputs(1.0), params())
    assert frames.shape == (10, SIZE, SIZE, 3) and frames.std() > 1.0
    carry = ChunkCarry.from_bytes(carries[-1])
    assert carry.arrays["motion_latents"].dtype == np.float32
    assert np.all(np.isfinite(carry.arrays["motion_latents"]))


def test_head_motion_left_unset_is_the_reference_still_keypoints() -> None:
    unset = resolve_options(make_params(VExpressOptions), has_driving_video=False)
    assert unset.head_motion == "still"
    sway = resolve_options(make_params(VExpressOptions, head_motion=0.4), has_driving_video=False)
    assert sway.head_motion == "sway"
