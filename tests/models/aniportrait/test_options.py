"""The aniportrait options: defaults, bounds, and the checks that need the job's inputs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from models.aniportrait.options import AniPortraitOptions, AniPortraitTinyOptions


def test_defaults_are_the_reference_ones() -> None:
    options = AniPortraitOptions()
    assert (options.num_inference_steps, options.guidance_scale) == (25, 3.5)
    assert (options.context_frames, options.context_overlap, options.head_motion) == (16, 4, "audio2pose")
    assert AniPortraitTinyOptions().num_inference_steps == 2


@pytest.mark.parametrize(
    "values",
    [
        {"num_inference_steps": 0},
        {"context_frames": 33},
        {"context_frames": 8, "context_overlap": 8},
        {"outputs": ["video", "landmarks"]},  # a common job parameter, not an engine option
        {"head_motion": "sway"},
        {"unknown": 1},
    ],
)
def test_invalid_values_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AniPortraitOptions.model_validate(values)


def test_driving_needs_a_driving_video() -> None:
    with pytest.raises(ValidationError, match="driving_video"):
        AniPortraitOptions.model_validate({"head_motion": "driving"}, context={"driving_video": False})
    options = AniPortraitOptions.model_validate({"head_motion": "driving"}, context={"driving_video": True})
    assert options.head_motion == "driving"


def test_options_module_is_torch_free() -> None:
    code = "import sys, models.aniportrait.options; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
