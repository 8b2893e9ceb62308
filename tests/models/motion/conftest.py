"""Tiny motion generators in the published layouts, built once per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ditto_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.motion.testing import write_ditto_layout

    root = tmp_path_factory.mktemp("ditto")
    write_ditto_layout(root)
    return root


@pytest.fixture(scope="module")
def joyvasa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.motion.testing import write_joyvasa_layout

    root = tmp_path_factory.mktemp("joyvasa")
    write_joyvasa_layout(root)
    return root


@pytest.fixture(scope="module")
def generator(ditto_dir: Path, joyvasa_dir: Path, one_torch_thread: None) -> Iterator[Any]:
    from models.motion.audio import DittoAudioFeatures, JoyVASAHubert, load_joyvasa_hubert
    from models.motion.ditto import DittoSampler, load_ditto
    from models.motion.ditto_model import tiny_ditto_config
    from models.motion.generator import MotionGenerator
    from models.motion.joyvasa import HUBERT_DIR, JoyVASASampler, load_joyvasa
    from models.motion.joyvasa_model import tiny_joyvasa_config
    from models.motion.testing import FakeDittoHubert

    model, sampling = load_ditto(ditto_dir, tiny_ditto_config())
    jmodel, template, hubert_state = load_joyvasa(joyvasa_dir, tiny_joyvasa_config())
    hubert = load_joyvasa_hubert(joyvasa_dir / HUBERT_DIR, hubert_state)
    fake = FakeDittoHubert()
    yield MotionGenerator(
        ditto=DittoSampler(model, sampling),
        ditto_features=lambda read, n: DittoAudioFeatures(fake, read, n),
        joyvasa=JoyVASASampler(jmodel, template, JoyVASAHubert(hubert, 2 * jmodel.config.n_motions)),
    )


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Two seconds of a noisy, amplitude-modulated tone (16 kHz)."""
    t = np.arange(32000) / 16000
    rng = np.random.RandomState(0)
    return (
        (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)))
        + 0.02 * rng.randn(t.size)
    ).astype(np.float32)
