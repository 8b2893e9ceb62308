"""The reference-compatible behaviours: seed_mode, frame_count, post_filter, kps_sequence.

The V-Express script's steps are re-enacted here from its documented behaviour (no reference code
is needed): ``torch.manual_seed(seed)``, one ``torch.rand([])`` per wav2vec2 layer (transformers
4.41's LayerDrop draw, made even in eval mode), then ``randn`` of the clip's latents in the model
dtype on the CPU. docs/vexpress.md records the same checks run against the script's own functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from core.errors import InvalidInput
from models.engine import RenderInputs, make_params
from models.vexpress.engine import reference_frame_count
from models.vexpress.options import VExpressOptions, VExpressTinyOptions
from models.vexpress.pipeline import median_filter_3x3x3, reference_compatible_noise, reflect_index


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def scripts_noise(shape: tuple[int, ...], seed: int, layers: int, dtype: torch.dtype) -> torch.Tensor:
    """What the V-Express script draws, on the global generator (restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        generator = torch.manual_seed(seed)
        for _ in range(layers):
            torch.rand([])  # Wav2Vec2Encoder.forward, transformers 4.41: LayerDrop's draw per layer
        return torch.randn(shape, generator=generator, dtype=dtype).float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_reference_noise_is_the_seeded_generator_after_the_layerdrop_draws(dtype: torch.dtype) -> None:
    shape = (1, 4, 14, 4, 4)
    noise = reference_compatible_noise(shape, 42, 12, dtype)
    assert noise.dtype == torch.float32
    assert torch.equal(noise, scripts_noise(shape, 42, 12, dtype))
    # the draws matter: without them the noise is a fresh generator's, which is Parla's own mode
    fresh = torch.randn(shape, generator=torch.Generator().manual_seed(42), dtype=dtype).float()
    assert not torch.equal(noise, fresh)
    assert torch.equal(reference_compatible_noise(shape, 42, 0, dtype), fresh)


def test_reference_frame_count_cuts_to_the_last_whole_window() -> None:
    # int(duration * fps) frames, then (windows - 1) * stride + context, as the script's context.py
    assert reference_frame_count(10.0, 30.0, 24, 4) == 284
    assert reference_frame_count(3.3, 25.0, 24, 4) == 64
    assert reference_frame_count(120.0, 25.0, 24, 4) == 2984
    assert reference_frame_count(1.0, 24.0, 24, 4) == 24
    with pytest.raises(InvalidInput) as error:
        reference_frame_count(0.5, 25.0, 24, 4)
    assert error.value.code == "audio_too_short"


def scripts_median(video: torch.Tensor) -> torch.Tensor:
    """The script's 3x3x3 median on float frames ``[3, F, H, W]``: reflect padding in all three dims."""
    padded = F.pad(video, (1, 1, 1, 1, 1, 1), mode="reflect")
    _, num_frames, height, width = video.shape
    out = []
    for index in range(num_frames):
        segment = padded[:, index : index + 3].unfold(2, 3, 1).unfold(3, 3, 1)
        out.append(torch.median(segment.permute(0, 2, 3, 1, 4, 5).reshape(3, height, width, -1), dim=-1)[0])
    return torch.stack(out, dim=1)


def test_median_filter_of_chunks_equals_the_scripts_filter_of_the_clip() -> None:
    video = torch.rand(3, 7, 10, 12, generator=torch.Generator().manual_seed(0))
    expected = (scripts_median(video).permute(1, 2, 3, 0) * 255).numpy().astype(np.uint8)
    frames = (video.permute(1, 2, 3, 0) * 255).numpy().astype(np.uint8)
    for start, stop in ((0, 3), (3, 7)):
        indices = [reflect_index(i, 7) for i in range(start - 1, stop + 1)]
        filtered = median_filter_3x3x3(torch.from_numpy(frames[indices])).numpy()
        np.testing.assert_array_equal(filtered, expected[start:stop])
    with pytest.raises(ValueError, match="F \\+ 2"):
        median_filter_3x3x3(torch.from_numpy(frames[:2]))
    assert [reflect_index(i, 1) for i in (-1, 0, 1)] == [0, 0, 0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seed_mode": "reference"}, "needs continuity 'overlap_average'"),
        ({"post_filter": "median3"}, "needs continuity 'overlap_average'"),
        ({"kps_sequence": [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], "head_motion": "still"}, "not both"),
        ({"kps_sequence": [[[1.0, 2.0], [3.0, 4.0]]]}, "at least 3"),
        ({"kps_sequence": []}, "at least 1"),
    ],
)
def test_reference_options_are_refused_where_they_cannot_hold(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VExpressOptions.model_validate(options)


def test_reference_mode_job_renders_the_scripts_noise_frame_count_and_sequence() -> None:
    from models.vexpress.testing import FixedKeypointAnalyzer, tiny_engine

    engine: Any = tiny_engine(seed=0, face_analyzer=FixedKeypointAnalyzer())
    sequence = [[[10.0 + i * 0.2, 13.0], [21.0, 13.0], [16.0, 19.0 + i * 0.1]] for i in range(5)]
    params = make_params(
        VExpressTinyOptions,
        fps=10.0,
        size=32,
        seed=42,
        context_frames=6,
        motion_frames=2,
        continuity="overlap_average",
        seed_mode="reference",
        frame_count="reference",
        post_filter="median3",
        kps_sequence=sequence,
        retarget="none",
    )
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    audio = np.random.default_rng(1).normal(0, 0.1, 24000).astype(np.float32)  # 1.5 s: 15 -> 14 frames
    prepared = engine.prepare(RenderInputs(image=image, audio=audio), params)
    assert prepared.num_frames == 14 and prepared.fps == pytest.approx(14 / 1.5)
    assert prepared.kps_sequence.shape == (14, 3, 2)
    np.testing.assert_allclose(prepared.kps_sequence[0], sequence[0])  # no_retarget: as given
    seen: list[torch.Tensor] = []
    original = engine.pipeline.overlap_average_latents

    def recording(*args: Any, noise: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        assert noise is not None
        seen.append(noise)
        return original(*args, noise=noise, **kwargs)  # type: ignore[no-any-return]

    engine.pipeline.overlap_average_latents = recording
    frames = [engine.render_chunk(prepared, chunk, None)[0] for chunk in engine.plan(prepared)]
    assert np.concatenate(frames).shape == (14, 32, 32, 3)
    layers = engine.pipeline.components.audio_encoder.config.num_hidden_layers
    assert len(seen) == 1 and torch.equal(seen[0], scripts_noise((1, 4, 14, 4, 4), 42, layers, torch.float32))
