"""A `liveportrait` motion source driven by the audio -> motion generators.

Implements the renderer's ``MotionSource`` protocol (``models.liveportrait.motion_source``: the
attributes ``num_frames`` and ``reference``, and ``frames(start, stop, carry)``) structurally, and
builds its ``MotionFrames`` through that module at run time, so this file does not depend on the
renderer's code at import.

Frames are *relative* to the job's first generated frame (``reference``), as both references'
renderers apply generated motion to the portrait, with each reference's exceptions folded into the
frames so the renderer's relative rule (``exp = exp_s + exp_i - exp_0``, ``scale = s_s * s_i / s_0``,
``t = t_s + t_i - t_0``, ``R = R_i R_0^T R_s``) gives the reference's result:

- Ditto (image source): only the lip and eye keypoints follow the generated expression (the others
  stay the portrait's), and scale is not driven (``head_distance`` still multiplies it).
  Difference: the reference mixes poses relative to the first frame in 66-bin logit space before
  converting to degrees; here the relative rule works on degrees.
- JoyVASA: the lip keypoints are absolute (the generated values replace the portrait's).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import numpy.typing as npt

from models.engine import ChunkCarry
from models.motion.generator import MotionGenerator, PortraitMotion
from models.motion.kp_info import MotionSequence
from models.motion.options import MotionOptions

FloatArray = npt.NDArray[np.float32]
LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)
EYE_KEYPOINTS = (11, 13, 15, 16, 18)
_CARRY_PREFIX = "motion."


def _motion_frames_class() -> Any:
    return importlib.import_module("models.liveportrait.motion_source").MotionFrames


class AudioMotionSource:
    """Motion of a job's frames from a `MotionGenerator` (Ditto or JoyVASA).

    Args:
        generator: The loaded generator(s).
        options: The job's motion options.
        portrait: The portrait's motion-extractor output and eye attributes.
        audio: The job's 16 kHz mono speech (float32).
        num_frames: Frames of the job (25 fps).
        seed: The job's seed (``options.seed`` wins when set).
    """

    def __init__(
        self,
        generator: MotionGenerator,
        options: MotionOptions,
        portrait: PortraitMotion,
        audio: FloatArray,
        num_frames: int,
        seed: int,
    ) -> None:
        self.generator = generator
        self.options = options
        self.portrait = portrait
        self.audio = np.asarray(audio, dtype=np.float32)
        self.num_frames = num_frames
        self.seed = seed
        self._raw_reference: MotionSequence | None = None
        self.reference: Any = None
        start = generator.start(self.audio.size, num_frames, portrait, self._raw_options, seed)
        first, self._first_carry = generator.next_frames(start, 1, self._read, portrait, self._raw_options)
        self._raw_reference = first
        # The renderer applies frames relative to this one: the raw first frame, so that the
        # per-model adjustments in `_frames` survive the relative rule.
        self.reference = _motion_frames_class()(**first.arrays())

    @property
    def _raw_options(self) -> MotionOptions:
        # The reference frame is the generated first frame without the post-hoc controls.
        return self.options.model_copy(update={"head_motion": 1.0, "head_distance": 1.0, "gaze": "forward"})

    def _read(self, a: int, b: int) -> FloatArray:
        return self.audio[a:b]

    def frames(
        self, start: int, stop: int, carry: dict[str, npt.NDArray[Any]] | None
    ) -> tuple[Any, dict[str, Any]]:
        """Motion of frames ``[start, stop)``; `carry` is the previous call's (None at 0)."""
        if not 0 <= start < stop <= self.num_frames:
            raise ValueError(f"frames [{start}, {stop}) outside [0, {self.num_frames})")
        if carry is None:
            if start != 0:
                raise ValueError("a motion source range after frame 0 needs the previous range's carry")
            motion_carry = self.generator.start(
                self.audio.size, self.num_frames, self.portrait, self.options, self.seed
            )
        else:
            motion_carry = _unpack(carry)
            if int(motion_carry.meta["returned"]) != start:
                raise ValueError(f"carry ends at frame {motion_carry.meta['returned']}, not {start}")
        motion, motion_carry = self.generator.next_frames(
            motion_carry, stop - start, self._read, self.portrait, self.options
        )
        return self._frames(motion), _pack(motion_carry)

    def _frames(self, motion: MotionSequence) -> Any:
        assert self._raw_reference is not None
        ref = self._raw_reference
        arrays = {k: v.copy() for k, v in motion.arrays().items()}
        exp_s = np.asarray(self.portrait.kp_info["exp"], np.float32).reshape(1, 21, 3)
        if self.options.motion_model == "ditto":
            driven = np.zeros(21, bool)
            driven[list(LIP_KEYPOINTS + EYE_KEYPOINTS)] = True
            arrays["exp"][:, ~driven] = ref.exp[0, ~driven]
            arrays["scale"] = np.broadcast_to(
                ref.scale[0] * self.options.head_distance, arrays["scale"].shape
            ).copy()
        else:
            lips = list(LIP_KEYPOINTS)
            arrays["exp"][:, lips] = arrays["exp"][:, lips] + ref.exp[0, lips] - exp_s[0, lips]
        return _motion_frames_class()(**{k: v.astype(np.float32) for k, v in arrays.items()})


def _pack(carry: ChunkCarry) -> dict[str, npt.NDArray[Any]]:
    packed: dict[str, npt.NDArray[Any]] = {_CARRY_PREFIX + k: v for k, v in carry.arrays.items()}
    packed[_CARRY_PREFIX + "meta"] = np.frombuffer(
        ChunkCarry(meta=carry.meta).to_bytes(), dtype=np.uint8
    ).copy()
    return packed


def _unpack(carry: dict[str, npt.NDArray[Any]]) -> ChunkCarry:
    meta = ChunkCarry.from_bytes(carry[_CARRY_PREFIX + "meta"].tobytes()).meta
    arrays = {
        k[len(_CARRY_PREFIX) :]: v
        for k, v in carry.items()
        if k.startswith(_CARRY_PREFIX) and k != _CARRY_PREFIX + "meta"
    }
    return ChunkCarry(arrays=arrays, meta=meta)
