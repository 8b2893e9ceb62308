"""Audio -> LivePortrait motion, chunk by chunk: one facade over both generators and the controls.

`MotionGenerator.start` fixes a job (audio length, portrait, options, seed); `next_frames` returns the
next ``n`` frames as a `MotionSequence` and a `ChunkCarry` from which a resumed job continues with the
same frames it would have produced uninterrupted. Only the sampler's tail, the frames sampled but not
yet returned (at most one window) and a few numbers are kept, so memory does not grow with length.

Controls applied after sampling (numpy, per frame; the model conditions take the others):

- ``head_motion``: pitch, yaw, roll and translation become ``first + head_motion * (value - first)``,
  ``first`` being the job's first generated frame.
- ``head_distance``: scale is multiplied by it.
- ``gaze``: eyeball offsets written into the expression as Ditto's stitching does (``_eye_delta`` on
  keypoints 11 and 15): ``forward`` compensates the head's yaw/pitch relative to the portrait
  (x = 0.26 * delta yaw, y = 0.28 * delta pitch, the reference's gaze fix) so the eyes keep looking at
  the camera; ``[x, y]`` adds that offset on top. The renderer must not apply the fix again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from models.engine import ChunkCarry
from models.motion.ditto import (
    DittoSampler,
    DittoState,
    bins_to_degrees,
    condition_rows,
    emotion_probs,
    motion_to_kp_info,
    source_motion_vector,
)
from models.motion.joyvasa import JoyVASASampler, JoyVASAState
from models.motion.kp_info import FIELDS, MotionSequence
from models.motion.options import MotionOptions

FloatArray = npt.NDArray[np.float32]
MOTION_FPS = 25
GAZE_X_RATIO, GAZE_Y_RATIO = 0.26, 0.28


@dataclass(frozen=True)
class PortraitMotion:
    """What the motion models need from the portrait (LivePortrait's motion extractor + eye attributes).

    Attributes:
        kp_info: ``scale`` (1), ``pitch``/``yaw``/``roll`` (66 raw bin logits), ``t`` (3), ``exp`` (63),
            ``kp`` (63 canonical keypoints), as the motion extractor returns them.
        eye_open: (2,) left/right eye-open ratios (Ditto's condition; the reference measures them
            on the 478-point mesh).
        eye_ball: (6,) eyeball offsets (Ditto's condition).
    """

    kp_info: dict[str, FloatArray]
    eye_open: FloatArray
    eye_ball: FloatArray

    @property
    def pose_degrees(self) -> tuple[float, float]:
        """(yaw, pitch) of the portrait in degrees."""
        yaw = bins_to_degrees(np.asarray(self.kp_info["yaw"], np.float32).reshape(1, 66))
        pitch = bins_to_degrees(np.asarray(self.kp_info["pitch"], np.float32).reshape(1, 66))
        return float(yaw[0, 0]), float(pitch[0, 0])


def eye_delta(exp: FloatArray, dx: FloatArray, dy: FloatArray) -> FloatArray:
    """Ditto's ``_eye_delta`` for every frame: (F, 21, 3) expression, (F,) offsets."""
    flat = exp.reshape(exp.shape[0], 63).copy()
    positive = dx > 0
    flat[:, 33] += np.where(positive, dx * 0.0007, dx * 0.001)
    flat[:, 45] += np.where(positive, dx * 0.001, dx * 0.0007)
    flat[:, 34] += dy * -0.001
    flat[:, 46] += dy * -0.001
    return flat.reshape(-1, 21, 3).astype(np.float32)


def apply_controls(
    motion: MotionSequence,
    options: MotionOptions,
    first: dict[str, FloatArray],
    portrait_pose: tuple[float, float],
) -> MotionSequence:
    """The post-hoc controls (module docstring). `first` holds the job's first frame's pitch, yaw,
    roll and t; `portrait_pose` the portrait's (yaw, pitch) in degrees."""
    arrays = {k: v.copy() for k, v in motion.arrays().items()}
    if options.head_motion != 1.0:
        for key in ("pitch", "yaw", "roll", "t"):
            arrays[key] = (first[key] + options.head_motion * (arrays[key] - first[key])).astype(np.float32)
    if options.head_distance != 1.0:
        arrays["scale"] = (arrays["scale"] * options.head_distance).astype(np.float32)
    yaw_s, pitch_s = portrait_pose
    dx = (arrays["yaw"][:, 0] - yaw_s) * GAZE_X_RATIO
    dy = (arrays["pitch"][:, 0] - pitch_s) * GAZE_Y_RATIO
    if isinstance(options.gaze, tuple):
        dx, dy = dx + options.gaze[0], dy + options.gaze[1]
    arrays["exp"] = eye_delta(arrays["exp"], dx.astype(np.float32), dy.astype(np.float32))
    return MotionSequence(**arrays)


class MotionGenerator:
    """One generator (`DittoSampler` + Ditto's HuBERT features, or `JoyVASASampler`) behind one API.

    Args:
        ditto: The Ditto sampler, with `ditto_features`: ``features(read_audio, num_samples)`` ->
            an object whose ``rows(a, b)`` gives HuBERT rows (`models.motion.audio.DittoAudioFeatures`).
        joyvasa: The JoyVASA sampler (its HuBERT is inside).
    """

    def __init__(
        self,
        ditto: DittoSampler | None = None,
        ditto_features: Callable[[Callable[[int, int], FloatArray], int], Any] | None = None,
        joyvasa: JoyVASASampler | None = None,
    ) -> None:
        if ditto is not None and ditto_features is None:
            raise ValueError("a Ditto sampler needs its audio features (ditto_features)")
        self.ditto = ditto
        self.ditto_features = ditto_features
        self.joyvasa = joyvasa
        self._ditto_samplers: dict[tuple[int | None, float | None], DittoSampler] = {}

    def _ditto_sampler(self, options: MotionOptions) -> DittoSampler:
        # The options' steps / guidance on the shared denoiser (one schedule per setting).
        if self.ditto is None:
            raise ValueError("this generator has no Ditto model")
        key = (options.steps, options.guidance_scale)
        if key == (None, None):
            return self.ditto
        if key not in self._ditto_samplers:
            sampling = self.ditto.sampling
            sampling = replace(
                sampling,
                steps=sampling.steps if options.steps is None else options.steps,
                guidance_scale=sampling.guidance_scale
                if options.guidance_scale is None
                else options.guidance_scale,
            )
            self._ditto_samplers[key] = DittoSampler(self.ditto.model, sampling, self.ditto.device)
        return self._ditto_samplers[key]

    def _joyvasa_sampler(self, options: MotionOptions) -> JoyVASASampler:
        if self.joyvasa is None:
            raise ValueError("this generator has no JoyVASA model")
        if options.guidance_scale is None:
            return self.joyvasa
        sampler = self.joyvasa
        sampling = replace(sampler.sampling, guidance_scale=options.guidance_scale)
        return JoyVASASampler(sampler.model, sampler.template, sampler.encode_audio, sampling, sampler.device)

    def start(
        self, num_samples: int, num_frames: int, portrait: PortraitMotion, options: MotionOptions, seed: int
    ) -> ChunkCarry:
        """The carry before the first frame of a job of `num_samples` 16 kHz samples and `num_frames`
        frames at 25 fps (the models' rate; the last generated frame is repeated if the model
        yields fewer, extra ones are dropped)."""
        seed = options.seed if options.seed is not None else seed
        state: DittoState | JoyVASAState
        if options.motion_model == "ditto":
            state = self._ditto_sampler(options).start(
                source_motion_vector(portrait.kp_info), num_frames, seed
            )
        else:
            state = self._joyvasa_sampler(options).start(num_samples, seed)
        carry = state.to_carry()
        carry.meta.update(job_frames=num_frames, returned=0, num_samples=num_samples)
        return carry

    def next_frames(
        self,
        carry: ChunkCarry,
        count: int,
        read_audio: Callable[[int, int], FloatArray],
        portrait: PortraitMotion,
        options: MotionOptions,
    ) -> tuple[MotionSequence, ChunkCarry]:
        """The next `count` frames (controls applied) and the carry after them."""
        returned, job_frames = int(carry.meta["returned"]), int(carry.meta["job_frames"])
        if not 0 < count <= job_frames - returned:
            raise ValueError(f"count={count} with {job_frames - returned} frames left")
        pending = _pending(carry)
        state_carry = ChunkCarry(
            arrays={k: v for k, v in carry.arrays.items() if not k.startswith(("p.", "first."))},
            meta=dict(carry.meta),
        )
        while (0 if pending is None else pending.num_frames) < count:
            produced, state_carry = self._sample_more(state_carry, read_audio, portrait, options)
            if produced is None:  # the model is done: repeat its last frame
                assert pending is not None
                last = pending.slice(pending.num_frames - 1, pending.num_frames)
                produced = MotionSequence.concat([last] * (count - pending.num_frames))
            pending = produced if pending is None else MotionSequence.concat([pending, produced])
        assert pending is not None
        first = {
            k: carry.arrays[f"first.{k}"]
            for k in ("pitch", "yaw", "roll", "t")
            if f"first.{k}" in carry.arrays
        }
        if not first:
            first = {k: getattr(pending, k)[0:1].copy() for k in ("pitch", "yaw", "roll", "t")}
        out = apply_controls(pending.slice(0, count), options, first, portrait.pose_degrees)
        rest = pending.slice(count, pending.num_frames)
        new = ChunkCarry(arrays=dict(state_carry.arrays), meta=dict(state_carry.meta))
        new.arrays.update({f"first.{k}": v for k, v in first.items()})
        new.arrays.update({f"p.{k}": v for k, v in rest.arrays().items()})
        new.meta["returned"] = returned + count
        return out, new

    def _sample_more(
        self,
        carry: ChunkCarry,
        read_audio: Callable[[int, int], FloatArray],
        portrait: PortraitMotion,
        options: MotionOptions,
    ) -> tuple[MotionSequence | None, ChunkCarry]:
        meta = {k: carry.meta[k] for k in ("job_frames", "returned", "num_samples")}
        if options.motion_model == "ditto":
            assert self.ditto_features is not None
            ditto = self._ditto_sampler(options)
            state = DittoState.from_carry(carry)
            if state.emitted >= state.num_frames:
                return None, carry
            features = self.ditto_features(read_audio, int(meta["num_samples"]))
            cfg = ditto.config
            probs = emotion_probs(options.emotion_index, options.emotion_strength)
            eye_open = (
                portrait.eye_open if options.eye_open is None else np.full(2, options.eye_open, np.float32)
            )
            kp = np.asarray(portrait.kp_info["kp"], np.float32).reshape(63)

            def read_cond(a: int, b: int) -> FloatArray:
                # Ditto has ceil(samples / 640) feature rows; later frames reuse the last one.
                index = np.minimum(np.arange(a, b), features.num_frames - 1)
                audio = features.rows(int(index[0]), int(index[-1]) + 1)[index - index[0]]
                return condition_rows(audio, cfg, probs, eye_open, portrait.eye_ball, kp)

            frames, state = ditto.step(state, read_cond)
            produced = MotionSequence(**motion_to_kp_info(frames))
            new = state.to_carry()
        else:
            joyvasa = self._joyvasa_sampler(options)
            jstate = JoyVASAState.from_carry(carry)
            if jstate.window >= joyvasa.plan(jstate.num_samples).num_windows:
                return None, carry
            parts, _, jstate = joyvasa.step(jstate, read_audio)
            parts["exp"] = parts["exp"].reshape(-1, 21, 3)
            produced = MotionSequence(**{k: parts[k].astype(np.float32) for k in FIELDS})
            new = jstate.to_carry()
        new.meta.update(meta)
        return produced, new


def _pending(carry: ChunkCarry) -> MotionSequence | None:
    if "p.scale" not in carry.arrays or carry.arrays["p.scale"].shape[0] == 0:
        return None
    return MotionSequence(**{k: carry.arrays[f"p.{k}"].astype(np.float32) for k in FIELDS})
