"""Job options of the ``liveportrait`` engines (torch-free: the API validates them at submit).

``head_motion`` picks the motion source (`models.liveportrait.motion_source`): ``"audio"`` (the
weight-free procedural source: lips from speech energy, blinks, head sway), ``"driving"`` (motion
transfer from the job's driving video, the default when the job has one) or ``"still"``. The other
options are the reference implementation's inference options of the same meaning.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from models.options import EngineOptions, has_driving_video

LivePortraitHeadMotion = Literal["audio", "driving", "still"]


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
