"""The sampling pipeline on tiny random-weight modules (CPU, fp32, 2 steps, 32x32)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from models.sd.sampler import check_window_options, motion_frame_windows, overlap_windows
from models.vexpress.pipeline import GuidanceOptions, VExpressPipeline
from models.vexpress.scheduler import build_scheduler

SIZE = 32
KPS = np.array([[11.0, 13.0], [21.0, 13.0], [16.0, 19.0]], dtype=np.float32)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_motion_frame_windows_overlap_by_motion_frames_and_cover_the_clip() -> None:
    assert motion_frame_windows(10, 24, 4) == [(0, 10)]
    assert motion_frame_windows(24, 24, 4) == [(0, 24)]
    windows = motion_frame_windows(70, 24, 4)
    assert windows == [(0, 24), (20, 44), (40, 64), (60, 70)]
    assert motion_frame_windows(9, 4, 0) == [(0, 4), (4, 8), (8, 9)]


def test_overlap_windows_follow_the_reference_and_end_on_the_last_frame() -> None:
    assert overlap_windows(64, 24, 4) == [(0, 24), (20, 44), (40, 64)]  # the reference's own lengths
    assert overlap_windows(50, 24, 4) == [(0, 24), (20, 44), (26, 50)]
    assert overlap_windows(7, 24, 4) == [(0, 7)]


@pytest.mark.parametrize(("context", "motion"), [(24, 24), (24, 30), (0, 0), (33, 4), (8, -1)])
def test_check_window_options_rejects_bad_combinations(context: int, motion: int) -> None:
    with pytest.raises(ValueError):
        check_window_options(context, motion)


@pytest.fixture(scope="module")
def pipeline() -> VExpressPipeline:
    from models.vexpress.testing import tiny_components

    return VExpressPipeline(tiny_components(seed=0), torch.device("cpu"), torch.float32)


def portrait() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def speech(seconds: float) -> np.ndarray:
    return np.random.default_rng(1).normal(0, 0.1, int(16000 * seconds)).astype(np.float32)


def kps_sequence(num_frames: int) -> np.ndarray:
    drift = np.linspace(0, 3, num_frames, dtype=np.float32)[:, None, None]
    return KPS[None] + drift


def render(pipeline: VExpressPipeline, num_frames: int, **options: object) -> np.ndarray:
    options.setdefault("num_inference_steps", 2)
    return pipeline(portrait(), kps_sequence(num_frames), speech(num_frames / 10), **options)  # type: ignore[arg-type]


def test_reference_and_condition_shapes(pipeline: VExpressPipeline) -> None:
    latents = pipeline.encode_reference(portrait())
    assert latents.shape == (1, 4, SIZE // 8, SIZE // 8)
    bank = pipeline.reference_bank(latents)
    assert bank and all(entry.ndim == 3 and entry.shape[0] == 1 for entry in bank)
    tokens = pipeline.encode_audio(speech(0.6), num_frames=6)
    assert tokens.shape[0] == 2 * 6 + 8
    projected = pipeline.project_audio(tokens, 1, 5)
    assert projected.shape == (4, 5, pipeline.cross_attention_dim)
    features = pipeline.kps_features(kps_sequence(20), SIZE, SIZE)  # more than one guider call of 16
    assert features.shape[:3] == (1, features.shape[1], 20) and features.shape[3:] == (SIZE // 8, SIZE // 8)
    conditions = pipeline.window_conditions(projected, features[:, :, :4], bank, GuidanceOptions())
    # the all-zero unconditional half is not built: the denoiser is told its first sample has none
    assert conditions.null_context_samples == 1 and torch.equal(conditions.audio_tokens, projected)
    assert conditions.kps_features.shape[0] == 1
    assert all(r is b for r, b in zip(conditions.reference_hidden_states, bank, strict=True))
    no_guidance = pipeline.window_conditions(
        projected, features[:, :, :4], bank, GuidanceOptions(guidance_scale=1.0)
    )
    assert no_guidance.audio_tokens.shape[0] == 4 and no_guidance.null_context_samples == 0
    projected_bank = pipeline.project_reference_bank(bank)
    assert len(projected_bank) == len(bank)


def test_batched_guidance_equals_separate_conditional_and_unconditional_calls() -> None:
    from models.vexpress.testing import tiny_components

    # float64: at 32x32 the tiny UNet's deepest GroupNorms see 2 values each and would amplify the
    # last-bit differences between batch sizes past any useful tolerance in float32
    pipeline = VExpressPipeline(
        tiny_components(seed=0, dtype=torch.float64), torch.device("cpu"), torch.float64
    )
    bank = pipeline.reference_bank(pipeline.encode_reference(portrait()))
    tokens = pipeline.project_audio(pipeline.encode_audio(speech(0.4), 4), 0, 4)
    features = pipeline.kps_features(kps_sequence(4), SIZE, SIZE)
    guidance = GuidanceOptions(guidance_scale=3.5)
    latents = torch.randn(1, 4, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))
    timestep = torch.tensor(999)
    guided = pipeline.predict_v(
        latents, timestep, pipeline.window_conditions(tokens, features, bank, guidance), guidance
    )
    cond_only = GuidanceOptions(guidance_scale=1.0)
    v_cond = pipeline.predict_v(
        latents, timestep, pipeline.window_conditions(tokens, features, bank, cond_only), cond_only
    )
    zeros = pipeline.window_conditions(
        torch.zeros_like(tokens), torch.zeros_like(features), [torch.zeros_like(b) for b in bank], cond_only
    )
    v_uncond = pipeline.predict_v(latents, timestep, zeros, cond_only)
    torch.testing.assert_close(guided, v_uncond + 3.5 * (v_cond - v_uncond), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(v_cond, v_uncond)


def test_same_seed_same_frames_other_seed_other_frames(pipeline: VExpressPipeline) -> None:
    first = render(pipeline, 6, generator=torch.Generator().manual_seed(5))
    assert first.shape == (6, SIZE, SIZE, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, render(pipeline, 6, generator=torch.Generator().manual_seed(5)))
    assert not np.array_equal(first, render(pipeline, 6, generator=torch.Generator().manual_seed(6)))


def test_both_continuity_modes_give_the_same_frames_for_a_single_window_clip(
    pipeline: VExpressPipeline,
) -> None:
    options = {"context_frames": 8, "motion_frames": 2}
    overlap = render(
        pipeline, 7, continuity="overlap_average", generator=torch.Generator().manual_seed(2), **options
    )
    motion = render(
        pipeline, 7, continuity="motion_frames", generator=torch.Generator().manual_seed(2), **options
    )
    np.testing.assert_array_equal(overlap, motion)


def test_multi_window_clips_render_every_frame_in_both_modes(pipeline: VExpressPipeline) -> None:
    options = {"context_frames": 6, "motion_frames": 2}
    overlap = render(
        pipeline, 11, continuity="overlap_average", generator=torch.Generator().manual_seed(2), **options
    )
    motion = render(
        pipeline, 11, continuity="motion_frames", generator=torch.Generator().manual_seed(2), **options
    )
    assert overlap.shape == motion.shape == (11, SIZE, SIZE, 3)
    assert not np.array_equal(overlap, motion)  # different schedules past the first window


def test_motion_frames_are_held_to_their_renoised_known_latents_at_every_step(
    pipeline: VExpressPipeline,
) -> None:
    bank = pipeline.reference_bank(pipeline.encode_reference(portrait()))
    guidance = GuidanceOptions()
    conditions = pipeline.window_conditions(
        pipeline.project_audio(pipeline.encode_audio(speech(0.6), 6), 0, 6),
        pipeline.kps_features(kps_sequence(6), SIZE, SIZE),
        bank,
        guidance,
    )
    generator = torch.Generator().manual_seed(0)
    known = torch.randn(1, 4, 2, SIZE // 8, SIZE // 8, generator=generator)
    noise = torch.randn(1, 4, 6, SIZE // 8, SIZE // 8, generator=generator)
    motion_noise = torch.randn(1, 4, 2, SIZE // 8, SIZE // 8, generator=generator)
    scheduler = build_scheduler(3)
    seen: list[tuple[int, torch.Tensor]] = []
    original = pipeline.predict_v

    def recording_predict_v(latents: torch.Tensor, timestep: torch.Tensor, *args: object) -> torch.Tensor:
        seen.append((int(timestep), latents[:, :, :2].clone()))
        return original(latents, timestep, *args)  # type: ignore[arg-type]

    pipeline.predict_v = recording_predict_v  # type: ignore[method-assign]
    try:
        latents = pipeline.denoise_window(
            noise, conditions, guidance, scheduler, motion_latents=known, motion_noise=motion_noise
        )
    finally:
        del pipeline.predict_v
    assert [t for t, _ in seen] == scheduler.timesteps.tolist()
    for timestep, motion_input in seen:
        a = scheduler.alphas_cumprod[timestep]
        torch.testing.assert_close(motion_input, a.sqrt() * known + (1 - a).sqrt() * motion_noise)
    assert torch.equal(latents[:, :, :2], known)
    assert not torch.equal(latents[:, :, 2:], noise[:, :, 2:])
