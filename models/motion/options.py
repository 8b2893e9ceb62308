"""Job options of the audio -> motion generators (torch-free: the API validates them at submit).

Defaults reproduce each reference. Combinations a model cannot honour are refused here (a
`ValueError` inside validation, i.e. a 422 at the API), never ignored.

| option | ditto | joyvasa | effect |
|---|---|---|---|
| ``motion_model`` | ``ditto`` | ``joyvasa`` | which generator |
| ``emotion`` | one of `EMOTION_NAMES`; ``auto`` = the reference's default (neutral) | ``auto`` only | Ditto's emotion condition |
| ``emotion_strength`` | 0..2 (1 = reference; 0 = uniform) | 1 only | sharpness of that condition |
| ``gaze`` | ``forward`` or ``[x, y]`` | same | eyeball offset in the expression (post-hoc, as Ditto's gaze fix) |
| ``eye_open`` | ``null`` = the portrait's, or 0..1 | ``null`` only | Ditto's eye-open condition |
| ``head_motion`` | 0..3 (1 = as generated) | same | scales pose and translation about the first frame |
| ``head_distance`` | 0.5..2 (1 = as generated) | same | multiplies scale: above 1 the head comes closer |
| ``seed`` | ``null`` = the job's | same | noise |
| ``steps`` | ``null`` = 50; 1..1000 DDIM steps | ``null`` only (ancestral: all steps) | sampling steps |
| ``guidance_scale`` | ``null`` = 2.0 | ``null`` = 2.8 | classifier-free guidance |
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from models.options import EngineOptions

EMOTION_NAMES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "contempt")
Emotion = Literal["auto", "angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "contempt"]
DITTO_DEFAULT_EMOTION = "neutral"  # the reference's emo=4


class MotionOptions(EngineOptions):
    """Controls of the generated motion (see the module docstring's table)."""

    motion_model: Literal["ditto", "joyvasa"] = Field("ditto", description="Audio -> motion generator.")
    emotion: Emotion = Field(
        "auto", description="Ditto's emotion class; 'auto' is the reference's default (neutral)."
    )
    emotion_strength: float = Field(
        1.0, ge=0.0, le=2.0, description="Scale of the emotion logits (1 = reference)."
    )
    gaze: Literal["forward"] | tuple[float, float] = Field(
        "forward",
        description="'forward' (eyes follow the reference's gaze fix) or an [x, y] eyeball offset, "
        "-30..30 each, x > 0 to the image's right, y > 0 up.",
    )
    eye_open: float | None = Field(
        None, ge=0.0, le=1.0, description="Ditto's eye-open condition (null = the portrait's)."
    )
    head_motion: float = Field(
        1.0, ge=0.0, le=3.0, description="Scale of pose dynamics about the first frame."
    )
    head_distance: float = Field(1.0, ge=0.5, le=2.0, description="Multiplies the head scale (>1: closer).")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Noise seed (null = the job's seed).")
    steps: int | None = Field(None, ge=1, le=1000, description="Ditto's DDIM steps (null = 50).")
    guidance_scale: float | None = Field(
        None, ge=0.0, le=10.0, description="Guidance (null = model default)."
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> MotionOptions:
        if isinstance(self.gaze, tuple) and any(abs(v) > 30 for v in self.gaze):
            raise ValueError("gaze offsets must be within -30..30")
        if self.motion_model == "joyvasa":
            unsupported = []
            if self.emotion != "auto":
                unsupported.append("emotion")
            if self.emotion_strength != 1.0:
                unsupported.append("emotion_strength")
            if self.eye_open is not None:
                unsupported.append("eye_open")
            if self.steps is not None:
                unsupported.append("steps (JoyVASA samples every diffusion step of its checkpoint)")
            if unsupported:
                raise ValueError(f"motion_model 'joyvasa' does not support: {', '.join(unsupported)}")
        return self

    @property
    def emotion_index(self) -> int:
        """Ditto's class index (``auto`` -> the reference's default)."""
        name = DITTO_DEFAULT_EMOTION if self.emotion == "auto" else self.emotion
        return EMOTION_NAMES.index(name)
