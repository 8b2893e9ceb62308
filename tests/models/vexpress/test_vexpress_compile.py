"""Compile / capture switches of the vexpress engine: wired, off by default, refused where they
cannot work. Compiling itself is slow on CPU (and the speed only matters on a GPU: bench/), so the
one test that compiles is marked slow."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch


def tiny(**config: Any) -> Any:
    from models.vexpress.engine import VExpressEngine
    from models.vexpress.testing import FixedKeypointAnalyzer, tiny_components

    return VExpressEngine(
        device="cpu",
        dtype="fp32",
        components=tiny_components(0),
        face_analyzer=FixedKeypointAnalyzer(),
        **{"warmup_size": 32, "warmup_context_frames": 2, **config},
    )


def test_eager_is_the_default() -> None:
    engine = tiny()
    pipeline = engine.pipeline
    assert pipeline.compiled_denoiser is None and pipeline.compiled_decoder is None
    assert pipeline.denoiser_for(2) is pipeline.denoising_unet


def test_compile_wraps_the_denoiser_at_the_window_length_only() -> None:
    engine = tiny(compile=True, decode_batch_frames=4)
    pipeline = engine.pipeline
    assert pipeline.compiled_window == 2 and pipeline.compiled_decode_batch == 4
    assert pipeline.denoiser_for(2) is pipeline.compiled_denoiser is not None
    assert pipeline.denoiser_for(1) is pipeline.denoising_unet  # a job's ragged last window: eager


def test_channels_last_stores_conv_weights_nhwc() -> None:
    engine = tiny(channels_last=True)
    conv = engine.pipeline.denoising_unet.conv_in
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cuda_graphs": True}, "cuda_graphs"),
        ({"cuda_graphs": True, "compile": True}, "CUDA device"),
        ({"warmup_size": 36}, "warmup_size"),
        ({"warmup_context_frames": 40}, "warmup_context_frames"),
    ],
)
def test_switches_that_cannot_work_are_refused_at_construction(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(**config)


def test_warmup_renders_at_the_configured_shapes() -> None:
    engine = tiny()
    seen: list[tuple[int, ...]] = []
    original = engine.pipeline.predict_v

    def recording(latents: torch.Tensor, *args: Any) -> torch.Tensor:
        seen.append(tuple(latents.shape))
        return original(latents, *args)  # type: ignore[no-any-return]

    engine.pipeline.predict_v = recording
    engine.warmup()
    assert seen == [(1, 4, 2, 4, 4)]  # one step, one window of warmup_context_frames at 32 / 8


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("PARLA_TEST_COMPILE") != "1",
    reason="inductor compiles the tiny UNet's graphs with a C++ compiler: many minutes on CPU, more "
    "than the suite's budget; run with PARLA_TEST_COMPILE=1 (and on a GPU host, bench/gpu_vexpress.sh)",
)
@pytest.mark.timeout(1800)
def test_compiled_engine_renders_what_eager_renders() -> None:
    pytest.importorskip("torch._inductor")
    from models.engine import RenderInputs, make_params
    from models.vexpress.options import VExpressTinyOptions

    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    audio = np.random.default_rng(1).normal(0, 0.1, 4000).astype(np.float32)
    params = make_params(VExpressTinyOptions, fps=8.0, size=32, seed=1, context_frames=2, motion_frames=0)
    frames = []
    for config in ({}, {"compile": True}):
        engine = tiny(decode_batch_frames=2, **config)
        engine.warmup()
        prepared = engine.prepare(RenderInputs(image=image, audio=audio), params)
        carry = None
        for chunk in engine.plan(prepared):
            chunk_frames, carry = engine.render_chunk(prepared, chunk, carry)
            frames.append(chunk_frames)
    half = len(frames) // 2
    eager, compiled = np.concatenate(frames[:half]), np.concatenate(frames[half:])
    assert np.abs(eager.astype(int) - compiled.astype(int)).max() <= 2
