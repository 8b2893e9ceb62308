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

Frame rate: both models generate 25 frames/s (their references write 25 fps video and have no
other rate). A job at another ``fps`` gets the motion of a 25 fps job of the same audio, resampled:
job frame ``i`` (time ``i / fps``) sits at model position ``u = 25 i / fps`` and is the linear
interpolation of model frames ``floor(u)`` and ``floor(u) + 1`` in every kp-info field (angles in
degrees; consecutive frames are 40 ms apart, so interpolating Euler angles is close to interpolating
rotations), the last model frame held at the end. Chunks resume exactly: the carry holds the model
frames the next chunk may still interpolate from (at most two).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import numpy.typing as npt

from models.engine import FEATURE_SAMPLE_RATE, ChunkCarry, num_frames_for
from models.motion.generator import MOTION_FPS, MotionGenerator, PortraitMotion
from models.motion.kp_info import FIELDS, MotionSequence
from models.motion.options import MotionOptions

FloatArray = npt.NDArray[np.float32]
LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)
EYE_KEYPOINTS = (11, 13, 15, 16, 18)
_CARRY_PREFIX = "motion."
_HELD_PREFIX = "resample."


def _motion_frames_class() -> Any:
    return importlib.import_module("models.liveportrait.motion_source").MotionFrames


class AudioMotionSource:
    """Motion of a job's frames from a `MotionGenerator` (Ditto or JoyVASA).

    Args:
        generator: The loaded generator(s).
        options: The job's motion options.
        portrait: The portrait's motion-extractor output and eye attributes.
        audio: The job's 16 kHz mono speech (float32).
        num_frames: Frames of the job (at `fps`).
        seed: The job's seed (``options.seed`` wins when set).
        fps: The job's frame rate; other than 25, the 25 fps motion is resampled (module docstring).
    """

    def __init__(
        self,
        generator: MotionGenerator,
        options: MotionOptions,
        portrait: PortraitMotion,
        audio: FloatArray,
        num_frames: int,
        seed: int,
        fps: float = MOTION_FPS,
    ) -> None:
        if fps <= 0 or num_frames < 1:
            raise ValueError(f"fps must be > 0 and num_frames >= 1, got {fps}, {num_frames}")
        self.generator = generator
        self.options = options
        self.portrait = portrait
        self.audio = np.asarray(audio, dtype=np.float32)
        self.num_frames = num_frames
        self.seed = seed
        self.fps = float(fps)
        self.resampled = self.fps != MOTION_FPS
        # Frames the model generates: the job's at 25 fps, else those of a 25 fps job of this audio.
        self.model_frames = (
            num_frames_for(self.audio.size / FEATURE_SAMPLE_RATE, MOTION_FPS)
            if self.resampled
            else num_frames
        )
        self._raw_reference: MotionSequence | None = None
        self.reference: Any = None
        start = generator.start(self.audio.size, self.model_frames, portrait, self._raw_options, seed)
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
                self.audio.size, self.model_frames, self.portrait, self.options, self.seed
            )
        else:
            motion_carry = _unpack(carry)
            resumed = (
                int(carry[_HELD_PREFIX + "next"][0]) if self.resampled else motion_carry.meta["returned"]
            )
            if int(resumed) != start:
                raise ValueError(f"carry ends at frame {resumed}, not {start}")
        if not self.resampled:
            motion, motion_carry = self.generator.next_frames(
                motion_carry, stop - start, self._read, self.portrait, self.options
            )
            return self._frames(motion), _pack(motion_carry)
        return self._resampled_frames(start, stop, motion_carry, carry)

    def _resampled_frames(
        self,
        start: int,
        stop: int,
        motion_carry: ChunkCarry,
        carry: dict[str, npt.NDArray[Any]] | None,
    ) -> tuple[Any, dict[str, Any]]:
        last = self.model_frames - 1
        position = np.arange(start, stop, dtype=np.float64) * MOTION_FPS / self.fps
        lower = np.minimum(np.floor(position).astype(np.int64), last)
        upper = np.minimum(lower + 1, last)
        weight = np.where(lower < last, position - np.floor(position), 0.0).astype(np.float32)
        # Model frames [offset, end) on hand: the ones held from the previous range, then new ones.
        returned = int(motion_carry.meta["returned"])
        parts = [] if carry is None else [_held(carry)]
        offset = returned - (0 if carry is None else parts[0].num_frames)
        end = int(upper[-1]) + 1
        if end > returned:
            new, motion_carry = self.generator.next_frames(
                motion_carry, end - returned, self._read, self.portrait, self.options
            )
            parts.append(new)
        window = MotionSequence.concat(parts) if len(parts) > 1 else parts[0]
        if int(lower[0]) < offset:
            raise ValueError(f"carry holds model frames from {offset}, frame {start} needs {int(lower[0])}")
        mixed = {}
        for key, value in window.arrays().items():
            below, above = value[lower - offset], value[upper - offset]
            w = weight.reshape(-1, *[1] * (value.ndim - 1))
            mixed[key] = (below + w * (above - below)).astype(np.float32)
        packed = _pack(motion_carry)
        keep = window.slice(max(0, max(end, returned) - 2 - offset), window.num_frames)
        packed.update({_HELD_PREFIX + k: v for k, v in keep.arrays().items()})
        packed[_HELD_PREFIX + "next"] = np.array([stop], np.int64)
        return self._frames(MotionSequence(**mixed)), packed

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


def _held(carry: dict[str, npt.NDArray[Any]]) -> MotionSequence:
    return MotionSequence(**{k: carry[_HELD_PREFIX + k].astype(np.float32) for k in FIELDS})


def _unpack(carry: dict[str, npt.NDArray[Any]]) -> ChunkCarry:
    meta = ChunkCarry.from_bytes(carry[_CARRY_PREFIX + "meta"].tobytes()).meta
    arrays = {
        k[len(_CARRY_PREFIX) :]: v
        for k, v in carry.items()
        if k.startswith(_CARRY_PREFIX) and k != _CARRY_PREFIX + "meta"
    }
    return ChunkCarry(arrays=arrays, meta=meta)
