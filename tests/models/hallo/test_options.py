"""The hallo options: the reference's defaults, bounds refused with invalid_params, torch-free."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.errors import InvalidInput
from models.hallo.options import HalloOptions, HalloTinyOptions
from models.options import validate_options


def test_defaults_are_the_references() -> None:
    options = HalloOptions()
    assert (options.num_inference_steps, options.guidance_scale) == (40, 3.5)
    assert options.motion_scale() == (1.0, 1.0, 1.0)
    assert (options.clip_frames, options.motion_frames, options.face_expand_ratio) == (16, 2, 1.2)
    assert HalloTinyOptions().num_inference_steps == 2


@pytest.mark.parametrize(
    "raw",
    [{"lip_weight": -1}, {"guidance_scale": 0.5}, {"clip_frames": 31, "motion_frames": 2}, {"unknown": 1}],
)
def test_bad_options_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(InvalidInput) as error:
        validate_options(HalloOptions, raw, driving_video=False)
    assert error.value.code == "invalid_params"


def test_options_module_imports_no_torch() -> None:
    code = "import sys, models.hallo.options; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
