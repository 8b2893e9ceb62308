"""Audio path of V-Express: normalisation, 2 tokens per frame, 10-token windows."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from models.vexpress.audio import (
    WINDOW_TOKENS,
    audio_windows,
    build_feature_extractor,
    encode_audio,
    frame_audio_tokens,
)
from models.vexpress.testing import tiny_audio_encoder


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def linear_resample_reference(values: np.ndarray, size: int) -> np.ndarray:
    """Linear interpolation with align_corners=False, written from its definition."""
    n = len(values)
    out = np.empty((size, values.shape[1]), dtype=np.float64)
    for i in range(size):
        x = max((i + 0.5) * n / size - 0.5, 0.0)
        left = min(int(np.floor(x)), n - 1)
        right = min(left + 1, n - 1)
        w = x - left
        out[i] = (1 - w) * values[left] + w * values[right]
    return out


def test_frame_audio_tokens_interpolates_two_per_frame_and_pads_four_zeros_each_side() -> None:
    hidden = torch.randn(39, 6, generator=torch.Generator().manual_seed(1))
    padded = frame_audio_tokens(hidden, num_frames=17)
    assert padded.shape == (2 * 17 + 8, 6)
    assert torch.all(padded[:4] == 0) and torch.all(padded[-4:] == 0)
    expected = linear_resample_reference(hidden.double().numpy(), 34)
    np.testing.assert_allclose(padded[4:-4].numpy(), expected, rtol=1e-4, atol=2e-5)


def test_frame_audio_tokens_interpolates_in_fp32_and_returns_the_input_dtype() -> None:
    hidden = torch.randn(20, 4).to(torch.bfloat16)
    padded = frame_audio_tokens(hidden, num_frames=5)
    assert padded.dtype == torch.bfloat16
    expected = frame_audio_tokens(hidden.float(), num_frames=5).to(torch.bfloat16)
    assert torch.equal(padded, expected)


def test_audio_windows_give_each_frame_the_tokens_of_frames_i_minus_2_to_i_plus_2() -> None:
    num_frames = 9
    # token value = 1 + index of the frame it belongs to, so zero means "padding"
    stretched = torch.arange(2 * num_frames, dtype=torch.float32).div(2).floor().add(1)[:, None]
    padded = torch.cat([torch.zeros(4, 1), stretched, torch.zeros(4, 1)])
    windows = audio_windows(padded, 0, num_frames)
    assert windows.shape == (num_frames, WINDOW_TOKENS, 1)
    for frame in range(num_frames):
        expected = [
            f + 1 if 0 <= f < num_frames else 0 for f in range(frame - 2, frame + 3) for _ in range(2)
        ]
        assert windows[frame, :, 0].tolist() == expected
    # any sub-range is the same slice of the whole
    assert torch.equal(audio_windows(padded, 3, 7), windows[3:7])


def test_audio_windows_rejects_frames_outside_the_clip() -> None:
    padded = torch.zeros(2 * 5 + 8, 3)
    with pytest.raises(ValueError):
        audio_windows(padded, 3, 6)


def test_feature_extractor_normalises_to_zero_mean_unit_variance_with_epsilon() -> None:
    audio = np.random.default_rng(0).normal(0.3, 0.2, 4000).astype(np.float32)
    values = build_feature_extractor()(audio, sampling_rate=16000, return_tensors="np").input_values[0]
    expected = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)


def test_encode_audio_shape_scale_invariance_and_determinism() -> None:
    torch.manual_seed(0)
    encoder = tiny_audio_encoder(hidden_size=32)
    extractor = build_feature_extractor()
    audio = np.random.default_rng(1).normal(0, 0.1, 12800).astype(np.float32)
    hidden = encode_audio(audio, encoder, extractor)
    assert hidden.shape == (39, 32)  # 12800 samples -> 39 tokens, as wav2vec2-base
    assert torch.equal(hidden, encode_audio(audio, encoder, extractor))
    # the clip is normalised first, so loudness does not change the features
    torch.testing.assert_close(encode_audio(audio * 3.0, encoder, extractor), hidden, rtol=1e-4, atol=1e-4)
