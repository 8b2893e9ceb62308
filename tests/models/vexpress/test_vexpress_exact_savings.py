"""The exact savings (skipped all-zero attentions, projected bank, clip conditions, uint8 kps) change
no result beyond float rounding order.

"Today's" computation is kept as an oracle here: the denoiser still accepts the explicit
``[zeros; conditional]`` batch (``null_context_samples=0``), which is what every render fed it
before. The renders run in float64: the tiny model's 1x1 deepest feature maps make its GroupNorms
amplify a last-bit difference of one fp32 GEMM (whose rounding depends on the number of rows) by
about 1e3 per denoiser call, so in fp32 no tolerance would separate a rounding difference from a bug.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from models.sd.attention import Context, ProjectedContext
from models.vexpress.kps import draw_kps_frames, draw_kps_video
from models.vexpress.pipeline import GuidanceOptions, VExpressPipeline, WindowConditions

SIZE = 32
KPS = np.array([[11.0, 13.0], [21.0, 13.0], [16.0, 19.0]], dtype=np.float32)
RELATIVE = 1e-6


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipeline64() -> VExpressPipeline:
    from models.vexpress.testing import tiny_components

    return VExpressPipeline(tiny_components(seed=0, dtype=torch.float64), torch.device("cpu"), torch.float64)


def _zeros_first(entry: Context) -> Context:
    if isinstance(entry, ProjectedContext):  # to_k / to_v of an all-zero bank are all zeros
        return ProjectedContext(
            torch.cat([torch.zeros_like(entry.key), entry.key]),
            torch.cat([torch.zeros_like(entry.value), entry.value]),
        )
    return torch.cat([torch.zeros_like(entry), entry])


def todays_conditions(
    tokens: torch.Tensor, features: torch.Tensor, bank: Sequence[Context], guidance: GuidanceOptions
) -> WindowConditions:
    """The conditions as they were built before: the unconditional half as explicit zeros."""
    weights: dict[str, Any] = {
        "reference_attention_weight": guidance.reference_attention_weight,
        "audio_attention_weight": guidance.audio_attention_weight,
    }
    if not guidance.do_classifier_free_guidance:
        return WindowConditions(tokens, features, list(bank), **weights)
    return WindowConditions(
        torch.cat([torch.zeros_like(tokens), tokens]),
        torch.cat([torch.zeros_like(features), features]),
        [_zeros_first(entry) for entry in bank],
        **weights,
    )


def relative_error(actual: np.ndarray | torch.Tensor, expected: np.ndarray | torch.Tensor) -> float:
    a, b = (np.asarray(x, dtype=np.float64) for x in (actual, expected))
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def test_the_skipped_attentions_equal_the_explicit_all_zero_batch_in_fp32_and_fp64() -> None:
    from models.vexpress.testing import tiny_components

    for dtype, tolerance in ((torch.float64, 1e-9), (torch.float32, None)):
        components = tiny_components(seed=0, dtype=dtype)
        pipeline = VExpressPipeline(components, torch.device("cpu"), dtype)
        unet = components.modules.denoising_unet
        generator = torch.Generator().manual_seed(3)
        bank = pipeline.reference_bank(torch.randn(1, 4, 4, 4, generator=generator).to(dtype))
        sample = torch.randn(1, 4, 3, 4, 4, generator=generator).to(dtype)
        tokens = torch.randn(3, 5, 32, generator=generator).to(dtype)
        kps = torch.randn(1, 32, 3, 4, 4, generator=generator).to(dtype)
        weights = {"reference_attention_weight": 0.95, "audio_attention_weight": 3.0}
        with torch.inference_mode():
            today = unet(
                torch.cat([sample, sample]),
                torch.tensor(499),
                torch.cat([torch.zeros_like(tokens), tokens]),
                [torch.cat([torch.zeros_like(b), b]) for b in bank],
                kps_features=torch.cat([torch.zeros_like(kps), kps]),
                **weights,
            )
            skipped = unet(
                torch.cat([sample, sample]),
                torch.tensor(499),
                tokens,
                pipeline.project_reference_bank(bank),
                kps_features=kps,
                null_context_samples=1,
                **weights,
            )
        # the unconditional sample is bit for bit the same: weight x bias is what the zeros gave
        assert torch.equal(skipped[0], today[0])
        if tolerance is not None:
            assert relative_error(skipped[1], today[1]) < tolerance


@pytest.mark.parametrize("continuity", ["motion_frames", "overlap_average"])
def test_guided_renders_equal_todays_computation(pipeline64: VExpressPipeline, continuity: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    kps = KPS[None] + np.linspace(0, 3, 11, dtype=np.float32)[:, None, None]
    audio = np.random.default_rng(1).normal(0, 0.1, 17600).astype(np.float32)
    options: dict[str, Any] = {
        "num_inference_steps": 2,
        "context_frames": 6,
        "motion_frames": 2,
        "continuity": continuity,
    }
    latents: dict[str, list[torch.Tensor]] = {"now": [], "today": []}
    original_decode = pipeline64.decode_latents

    def recording_decode(name: str) -> Any:
        def decode(window_latents: torch.Tensor, decode_batch_frames: int = 8) -> np.ndarray:
            latents[name].append(window_latents.clone())
            return original_decode(window_latents, decode_batch_frames)

        return decode

    pipeline64.decode_latents = recording_decode("now")  # type: ignore[method-assign]
    try:
        now = pipeline64(image, kps, audio, generator=torch.Generator().manual_seed(4), **options)
        pipeline64.window_conditions = todays_conditions  # type: ignore[method-assign,assignment]
        pipeline64.decode_latents = recording_decode("today")  # type: ignore[method-assign]
        today = pipeline64(image, kps, audio, generator=torch.Generator().manual_seed(4), **options)
    finally:
        del pipeline64.window_conditions, pipeline64.decode_latents
    assert len(latents["now"]) == len(latents["today"]) > 0
    for ours, theirs in zip(latents["now"], latents["today"], strict=True):
        assert relative_error(ours, theirs) < RELATIVE
    assert np.abs(now.astype(int) - today.astype(int)).max() <= 1  # uint8 truncation at a boundary


def test_clip_conditions_are_the_per_window_conditions() -> None:
    from models.vexpress.testing import tiny_components

    pipeline = VExpressPipeline(tiny_components(seed=0), torch.device("cpu"), torch.float32)
    kps = KPS[None] + np.linspace(0, 3, 20, dtype=np.float32)[:, None, None]
    audio = np.random.default_rng(1).normal(0, 0.1, 32000).astype(np.float32)
    tokens = pipeline.encode_audio(audio, 20)
    clip = pipeline.clip_conditions(tokens, kps, SIZE, SIZE, 0, 20)
    for start, stop in ((0, 6), (4, 10), (14, 20)):
        window_tokens, window_features = clip.frames(start, stop)
        assert relative_error(window_tokens, pipeline.project_audio(tokens, start, stop)) < RELATIVE
        assert relative_error(window_features, pipeline.kps_features(kps[start:stop], SIZE, SIZE)) < RELATIVE
    with pytest.raises(ValueError, match="not within"):
        clip.frames(18, 22)


def test_uint8_kps_frames_give_the_float_images_bit_for_bit() -> None:
    kps = KPS[None] + np.linspace(0, 3, 3, dtype=np.float32)[:, None, None]
    frames = draw_kps_frames(SIZE, SIZE, kps)
    assert frames.dtype == torch.uint8 and frames.shape == (1, 3, 3, SIZE, SIZE)
    assert torch.equal(frames.float() / 255.0, draw_kps_video(SIZE, SIZE, kps))


def test_null_context_needs_a_block_that_takes_it_and_a_sample_with_context(
    pipeline64: VExpressPipeline,
) -> None:
    unet = pipeline64.components.modules.denoising_unet
    sample = torch.zeros(2, 4, 2, 4, 4, dtype=torch.float64)
    bank = [torch.zeros(1, 1, 1, dtype=torch.float64)] * unet.num_banks
    with pytest.raises(ValueError, match="null_context_samples"):
        unet.check_inputs(sample, torch.zeros(0, 5, 32), bank, null_context_samples=2)
    with pytest.raises(ValueError, match="reference_hidden_states"):
        unet.check_inputs(sample, torch.zeros(2, 5, 32), [torch.zeros(2, 1, 1)] * unet.num_banks, 1)


def test_block_outputs_keep_the_networks_layout_and_change_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Token maps permuted back to NCHW are made contiguous (``models.sd.transformer_blocks.same_layout``):
    every GroupNorm and convolution then sees the layout it was given, as in the reference. This is
    a memory layout, not arithmetic: in float64 the results equal those of the strided maps (to 1e-9: last-bit differences, amplified by
    the tiny model as in the golden test)."""
    import models.sd.motion_module as motion_module
    import models.sd.transformer_blocks as transformer_blocks
    from models.vexpress.testing import tiny_components

    components = tiny_components(seed=0, dtype=torch.float64)
    pipeline = VExpressPipeline(components, torch.device("cpu"), torch.float64)
    unet = components.modules.denoising_unet
    generator = torch.Generator().manual_seed(5)
    reference = torch.randn(1, 4, 4, 4, generator=generator, dtype=torch.float64)
    sample = torch.randn(2, 4, 3, 4, 4, generator=generator, dtype=torch.float64)
    tokens = torch.randn(3, 5, 32, generator=generator, dtype=torch.float64)
    kps = torch.randn(1, 32, 3, 4, 4, generator=generator, dtype=torch.float64)

    layouts: list[bool] = []
    hook = unet.conv_out.register_forward_pre_hook(lambda _, args: layouts.append(args[0].is_contiguous()))

    def run() -> tuple[list[torch.Tensor], torch.Tensor]:
        with torch.inference_mode():
            bank = pipeline.reference_bank(reference)
            v = unet(
                sample, torch.tensor(499), tokens, pipeline.project_reference_bank(bank),
                kps_features=kps, null_context_samples=1,
                reference_attention_weight=0.95, audio_attention_weight=3.0,
            )  # fmt: skip
        return bank, v

    bank, v = run()
    for module in (transformer_blocks, motion_module):
        monkeypatch.setattr(module, "same_layout", lambda tensor, like: tensor)
    strided_bank, strided_v = run()
    hook.remove()
    assert layouts == [True, False]  # the strided maps reach the last convolution channels-last
    for ours, strided in zip(bank, strided_bank, strict=True):
        assert relative_error(ours, strided) < 1e-9
    assert relative_error(v, strided_v) < 1e-9  # the tiny model amplifies rounding (see the golden test)
