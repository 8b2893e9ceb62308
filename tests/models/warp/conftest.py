"""Real inputs for the warp engine tests: the sample portraits and recordings of tests/assets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from models.audio import load_audio
from models.face import MediaPipeFaceAnalyzer

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def load_image(name: str) -> np.ndarray:
    return np.asarray(ImageOps.exif_transpose(Image.open(ASSETS / name)).convert("RGB"))


@pytest.fixture(scope="session")
def analyzer() -> MediaPipeFaceAnalyzer:
    return MediaPipeFaceAnalyzer()


@pytest.fixture(scope="session")
def portrait() -> np.ndarray:
    return load_image("portrait.png")


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    return load_audio(ASSETS / "speech.wav")


@pytest.fixture(scope="session")
def heldout_portrait() -> np.ndarray:
    """A portrait the rig was not tuned on: mirrored, 5:8, dimmer, stored sideways with EXIF orientation."""
    return load_image("portrait_heldout.jpg")


@pytest.fixture(scope="session")
def heldout_speech() -> np.ndarray:
    """Another voice and sentence, quiet, 22.05 kHz FLAC."""
    return load_audio(ASSETS / "speech_heldout.flac")
