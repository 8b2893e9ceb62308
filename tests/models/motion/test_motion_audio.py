"""Audio features: JoyVASA's HuBERT windowing, Ditto's streaming HuBERT chunks and frame alignment."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import WeightsError
from models.motion.audio import (
    DittoAudioFeatures,
    JoyVASAHubert,
    load_joyvasa_hubert,
    open_ditto_hubert,
    reflect_pad,
)
from models.motion.testing import FakeDittoHubert, tiny_hubert


def test_reflect_pad_gives_whole_hops() -> None:
    padded = reflect_pad(torch.randn(1, 5120))
    assert padded.shape == (1, 5200)
    hubert = tiny_hubert(16)
    assert hubert.feature_extractor(padded).shape[-1] == 16  # 5120 / 320


def test_joyvasa_hubert_rows(one_torch_thread: None) -> None:
    encoder = JoyVASAHubert(tiny_hubert(16), num_rows=16)
    audio = torch.randn(1, 5120)
    hidden = encoder(audio)
    assert hidden.shape == (1, 16, 16)
    torch.testing.assert_close(encoder(audio), hidden)


def test_hubert_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"no config\.json"):
        load_joyvasa_hubert(tmp_path)
    tiny_hubert(16).save_pretrained(tmp_path)
    with pytest.raises(WeightsError, match="missing keys"):
        load_joyvasa_hubert(tmp_path, {"feature_projection.projection.weight": torch.zeros(16, 8)})


class _Recording(FakeDittoHubert):
    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[np.ndarray] = []

    def run(self, output_names: object, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.chunks.append(input_feed["input_values"][0].copy())
        return super().run(output_names, input_feed)


def test_ditto_chunks_follow_the_reference_offline_windowing() -> None:
    audio = np.random.RandomState(0).randn(16000).astype(np.float32)
    session = _Recording()
    features = DittoAudioFeatures(session, lambda a, b: audio[a:b], audio.size)
    assert features.num_frames == 25
    rows = features.rows(0, 25)
    # The reference pads 2000 zeros before and 6480 after, and encodes [i * 640, i * 640 + 6480) for i = 0, 5, ...
    padded = np.concatenate([np.zeros(2000, np.float32), audio, np.zeros(6480, np.float32)])
    assert len(session.chunks) == 5
    for g, chunk in enumerate(session.chunks):
        np.testing.assert_array_equal(chunk, padded[g * 3200 : g * 3200 + 6480])
    expected = (
        session.run(None, {"input_values": padded[3200:9680][None]})[0][-14:-4].reshape(5, 2, 1024).mean(1)
    )
    np.testing.assert_allclose(rows[5:10], expected, rtol=1e-6)
    np.testing.assert_array_equal(features.rows(7, 9), rows[7:9])  # on demand == all at once
    with pytest.raises(ValueError, match="outside"):
        features.rows(20, 26)


def test_ditto_onnx_session(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="lacks"):
        open_ditto_hubert(tmp_path)
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed: the real ONNX session cannot be opened here")
    from models.motion.audio import DITTO_HUBERT_PATH
    from models.motion.testing import write_tiny_ditto_hubert_onnx

    weight = write_tiny_ditto_hubert_onnx(tmp_path / DITTO_HUBERT_PATH)
    session = open_ditto_hubert(tmp_path, device="cpu")
    audio = np.random.RandomState(1).randn(8000).astype(np.float32)
    rows = DittoAudioFeatures(session, lambda a, b: audio[a:b], audio.size).rows(0, 13)
    padded = np.concatenate([np.zeros(2000, np.float32), audio, np.zeros(6480, np.float32)])
    chunk = padded[3200 : 3200 + 6480]
    encoding = np.stack([weight @ chunk[i * 320 : i * 320 + 400] for i in range(20)])
    expected = encoding[-14:-4].reshape(5, 2, 1024).mean(1)
    np.testing.assert_allclose(rows[5:10], expected, rtol=1e-4, atol=1e-5)


def test_eye_attributes() -> None:
    from models.motion.eyes import eye_attributes

    lmk = np.zeros((478, 3), np.float32)
    # left eye: corners 0.1 apart on x, lids 0.03 apart, iris at the centre -> open 0.9, no move
    lmk[33], lmk[133] = (0.30, 0.4, 0), (0.40, 0.4, 0)
    for low, up in ((145, 159), (144, 160), (153, 158)):
        lmk[low], lmk[up] = (0.35, 0.415, 0), (0.35, 0.385, 0)
    lmk[468] = (0.35, 0.4, 0)
    lmk[263], lmk[362] = (0.70, 0.4, 0), (0.60, 0.4, 0)
    lmk[473] = (0.65, 0.41, 0)  # right iris 0.01 below its centre
    eye_open, eye_ball = eye_attributes(lmk)
    assert eye_open[0] == pytest.approx(0.9, rel=1e-5) and eye_open[1] == pytest.approx(0.0)
    assert eye_ball.shape == (6,) and eye_ball[0] == pytest.approx(0.0, abs=1e-6)
    assert eye_ball[3] > 0  # right eye y offset (pairs per axis: xL, xR, yL, yR, zL, zR)
    with pytest.raises(ValueError, match="478"):
        eye_attributes(np.zeros((468, 3), np.float32))
