"""Motion options: defaults, bounds and refused combinations (torch-free)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from models.motion.options import MotionOptions


def test_defaults_reproduce_the_references() -> None:
    options = MotionOptions()
    assert options.motion_model == "ditto" and options.emotion_index == 4  # neutral, the reference's emo
    assert options.steps is None and options.guidance_scale is None and options.gaze == "forward"
    assert MotionOptions(emotion="happy").emotion_index == 3


@pytest.mark.parametrize(
    "fields",
    [
        {"emotion": "joyful"},
        {"emotion_strength": 3.0},
        {"head_motion": -1},
        {"head_distance": 0.1},
        {"steps": 0},
        {"gaze": (40.0, 0.0)},
        {"unknown": 1},
        {"motion_model": "joyvasa", "emotion": "happy"},
        {"motion_model": "joyvasa", "eye_open": 0.5},
        {"motion_model": "joyvasa", "steps": 10},
        {"motion_model": "joyvasa", "emotion_strength": 0.5},
    ],
)
def test_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MotionOptions(**fields)  # type: ignore[arg-type]


def test_frozen_and_torch_free() -> None:
    with pytest.raises(ValidationError):
        MotionOptions().head_motion = 2.0  # type: ignore[misc]
    code = "import sys, models.motion.options; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
