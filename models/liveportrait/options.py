"""Job options of the ``liveportrait`` engines (torch-free: the API validates them at submit).

``head_motion`` picks the motion source (`models.liveportrait.motion_source`): ``"audio"`` (the
weight-free procedural source: lips from speech energy, blinks, head sway), ``"driving"`` (motion
transfer from the job's driving video, the default when the job has one) or ``"still"``. The other
options are the reference implementation's inference options of the same meaning.

``motion_model`` picks what generates the motion of ``head_motion="audio"``: ``"procedural"`` (the
default: no extra weights) or one of the audio -> motion diffusion models of `models.motion`
(``"ditto"``, ``"joyvasa"``; their weights must be loaded by the worker, else the job is refused at
prepare). The motion controls (``emotion``, ``emotion_strength``, ``gaze``, ``eye_open``,
``head_motion_scale``, ``head_distance``, ``steps``, ``guidance_scale``) are those of
`models.motion.options.MotionOptions` (``head_motion_scale`` is its ``head_motion``), and apply only
to a motion model; combinations a model cannot honour are refused, naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from models.motion.options import Emotion, MotionOptions
from models.options import EngineOptions, has_driving_video

LivePortraitHeadMotion = Literal["audio", "driving", "still"]
LivePortraitMotionModel = Literal["procedural", "ditto", "joyvasa"]
MOTION_CONTROLS = (
    "emotion",
    "emotion_strength",
    "gaze",
    "eye_open",
    "head_motion_scale",
    "head_distance",
    "steps",
    "guidance_scale",
)
"""Options that only a motion model (``motion_model`` other than ``"procedural"``) honours."""
PROCEDURAL_ONLY = ("sway_degrees", "blink")
"""Options that only the procedural source honours (a motion model generates head motion and blinks)."""


class LivePortraitOptions(EngineOptions):
    """The liveportrait engines' options (``engine_options`` of a job)."""

    head_motion: LivePortraitHeadMotion = Field(
        "audio",
        description='Motion source: "audio" (procedural, from the speech), "driving" (the driving video), '
        '"still". Defaults to "driving" when the job has a driving video.',
    )
    sway_degrees: float = Field(
        3.0, ge=0.0, le=10.0, description='Head sway amplitude of head_motion="audio".'
    )
    blink: bool = Field(True, description='Blink (head_motion="audio").')
    motion_model: LivePortraitMotionModel = Field(
        "procedural",
        description='Generator of head_motion="audio": "procedural" (no weights), "ditto" or "joyvasa" '
        "(audio -> motion diffusion; the worker must have loaded its weights).",
    )
    emotion: Emotion = Field(
        "auto",
        description="Ditto's emotion class ('auto' = the reference's default, neutral; JoyVASA: auto only).",
    )
    emotion_strength: float = Field(
        1.0, ge=0.0, le=2.0, description="Ditto: scale of the emotion condition (1 = reference)."
    )
    gaze: Literal["forward"] | tuple[float, float] = Field(
        "forward",
        description="Motion models: 'forward' (eyes keep looking at the camera) or an [x, y] eyeball "
        "offset, -30..30 each, x > 0 to the image's right, y > 0 up.",
    )
    eye_open: float | None = Field(
        None, ge=0.0, le=1.0, description="Ditto's eye-open condition (null = the portrait's)."
    )
    head_motion_scale: float = Field(
        1.0,
        ge=0.0,
        le=3.0,
        description="Motion models: scale of the generated pose dynamics (1 = as generated).",
    )
    head_distance: float = Field(
        1.0,
        ge=0.5,
        le=2.0,
        description="Motion models: multiplies the head scale (>1: closer to the camera).",
    )
    steps: int | None = Field(None, ge=1, le=1000, description="Ditto's DDIM steps (null = 50).")
    guidance_scale: float | None = Field(
        None, ge=0.0, le=10.0, description="Motion models' guidance (null = the model's default)."
    )
    lip_multiplier: float = Field(1.0, ge=0.0, le=2.0, description="Scales the lip retargeting delta.")
    eye_multiplier: float = Field(1.0, ge=0.0, le=2.0, description="Scales the eye retargeting delta.")
    eye_retargeting: bool = Field(
        False,
        description="head_motion=\"driving\": drive only the eyes from the video's eye ratios (the reference's "
        "flag_eye_retargeting); pose and expression stay the portrait's.",
    )
    lip_retargeting: bool = Field(
        False, description='head_motion="driving": drive only the lips from the video\'s lip ratios.'
    )
    stitching: bool = Field(
        True, description="Apply the stitching network (keeps shoulders and crop borders still)."
    )
    driving_option: Literal["expression-friendly", "pose-friendly"] = Field(
        "expression-friendly",
        description="expression-friendly rescales driving motion to the portrait's keypoint spread; pose-friendly does not.",
    )
    driving_multiplier: float = Field(
        1.0, ge=0.0, le=2.0, description="Scales the whole keypoint displacement."
    )
    normalize_lip: bool = Field(
        False, description='head_motion="driving"/"still": close an open-mouthed portrait\'s lips first.'
    )

    @model_validator(mode="before")
    @classmethod
    def _driving_by_default(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and has_driving_video(info) and "head_motion" not in data:
            return {**data, "head_motion": "driving"}
        return data

    @model_validator(mode="after")
    def _check_driving(self, info: ValidationInfo) -> LivePortraitOptions:
        if (self.eye_retargeting or self.lip_retargeting) and self.head_motion != "driving":
            raise ValueError('eye_retargeting and lip_retargeting need head_motion="driving"')
        if self.motion_model == "procedural":
            set_controls = [name for name in MOTION_CONTROLS if not self._is_default(name)]
            if set_controls:
                raise ValueError(
                    f'{", ".join(set_controls)}: only for a motion model (motion_model "ditto" or "joyvasa")'
                )
        else:
            if self.head_motion != "audio":
                raise ValueError(
                    f'motion_model "{self.motion_model}" generates the motion from the audio: it needs '
                    f'head_motion="audio", not "{self.head_motion}"'
                )
            set_procedural = [name for name in PROCEDURAL_ONLY if not self._is_default(name)]
            if set_procedural:
                raise ValueError(
                    f'{", ".join(set_procedural)}: only for motion_model "procedural" (the motion model '
                    "generates head motion and blinks)"
                )
            self.motion_options()  # refuses what the model cannot honour, naming the fields
        if info.context is None:  # validated without a job (defaults, schema): nothing more to check
            return self
        has_video = has_driving_video(info)
        if self.head_motion == "driving" and not has_video:
            raise ValueError('head_motion="driving" needs a driving_video')
        if has_video and self.head_motion != "driving":
            raise ValueError(
                f'the job has a driving_video but head_motion="{self.head_motion}" would ignore it'
            )
        return self

    def _is_default(self, name: str) -> bool:
        # Not `model_fields_set`: the worker validates the stored options again, every default filled in.
        return bool(getattr(self, name) == type(self).model_fields[name].default)

    def motion_options(self) -> MotionOptions:
        """The motion controls as `MotionOptions` (only for a motion model).

        Raises:
            ValueError: ``motion_model="procedural"``, or a combination the model cannot honour.
        """
        if self.motion_model == "procedural":
            raise ValueError('motion_model "procedural" has no motion options')
        return MotionOptions(
            motion_model=self.motion_model,
            emotion=self.emotion,
            emotion_strength=self.emotion_strength,
            gaze=self.gaze,
            eye_open=self.eye_open,
            head_motion=self.head_motion_scale,
            head_distance=self.head_distance,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
        )
