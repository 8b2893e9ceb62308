"""The motion models in bf16 / fp16 (as on CUDA) run on CPU and stay close to fp32 (tiny weights)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from models.motion.kp_info import FIELDS, MotionSequence
from models.motion.options import MotionOptions
from models.motion.testing import portrait_motion
from models.motion.weights import tiny_motion_generator

# Max |low precision - fp32| / max |fp32| per kp-info field over 50 frames (several windows of both
# models). Measured on these tiny weights: bf16 3.4e-2 (Ditto's roll) / 1.5e-2 (JoyVASA's t), fp16
# 4.1e-3 / 1.1e-3; the published weights' numbers need the GPU bench (bench.motion --dtype).
TOLERANCE = {torch.bfloat16: 5e-2, torch.float16: 1e-2}


def _motion(generator: Any, model: str, speech: np.ndarray) -> MotionSequence:
    portrait, options = portrait_motion(), MotionOptions(motion_model=model)  # type: ignore[arg-type]
    carry = generator.start(speech.size, 50, portrait, options, 0)
    motion: MotionSequence = generator.next_frames(carry, 50, lambda a, b: speech[a:b], portrait, options)[0]
    return motion


@pytest.fixture(scope="module")
def fp32_motion(speech: np.ndarray, one_torch_thread: None) -> dict[str, MotionSequence]:
    generator = tiny_motion_generator(seed=0)
    return {model: _motion(generator, model, speech) for model in ("ditto", "joyvasa")}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_is_close_to_fp32(
    dtype: torch.dtype, speech: np.ndarray, fp32_motion: dict[str, MotionSequence]
) -> None:
    generator = tiny_motion_generator(seed=0, dtype=dtype)
    assert generator.ditto is not None and next(generator.ditto.model.parameters()).dtype == dtype
    assert generator.joyvasa is not None and next(generator.joyvasa.model.parameters()).dtype == dtype
    for model, reference in fp32_motion.items():
        motion = _motion(generator, model, speech)
        for field in FIELDS:
            value, expected = getattr(motion, field), getattr(reference, field)
            assert value.dtype == np.float32 and np.isfinite(value).all()
            error = float(np.abs(value - expected).max() / np.abs(expected).max())
            assert error <= TOLERANCE[dtype], f"{model}.{field}: {error:.2e}"
            assert not np.array_equal(value, expected) or field == "scale"  # it did run in low precision


def test_engine_motion_dtype_is_checked() -> None:
    from models.liveportrait.engine import LivePortraitEngine
    from models.liveportrait.testing import tiny_modules

    with pytest.raises(ValueError, match="motion_dtype must be one of"):
        LivePortraitEngine(modules=tiny_modules(0), motion_dtype="int8")
