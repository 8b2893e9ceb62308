"""Job options of the ``vexpress`` engine (torch-free: the API validates them at submit).

The defaults are the reference's (V-Express ``inference.py``); bounds are what the published
model supports (its motion modules see at most 32 frames).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from models.options import EngineOptions, has_driving_video

MAX_CONTEXT_FRAMES = 32
"""Longest window of the published motion modules (their positional encoding's length)."""
DEFAULT_SWAY_AMPLITUDE = 0.5
"""Sway amplitude of ``head_motion="sway"``."""


class VExpressOptions(EngineOptions):
    """The vexpress engine's options."""

    num_inference_steps: int = Field(25, ge=1, le=200, description="DDIM steps.")
    guidance_scale: float = Field(3.5, ge=1.0, le=20.0, description="Classifier-free guidance scale.")
    reference_attention_weight: float = Field(
        0.95, ge=0.0, le=5.0, description="Weight of the reference (identity) attention."
    )
    audio_attention_weight: float = Field(3.0, ge=0.0, le=10.0, description="Weight of the audio attention.")
    context_frames: int = Field(
        24,
        ge=2,
        le=MAX_CONTEXT_FRAMES,
        description=f"Frames per diffusion window (at most {MAX_CONTEXT_FRAMES}, the motion modules' length).",
    )
    motion_frames: int = Field(
        4, ge=0, le=MAX_CONTEXT_FRAMES - 1, description="Frames carried from one window to the next."
    )
    continuity: Literal["motion_frames", "overlap_average"] = Field(
        "motion_frames",
        description="How windows join: carried motion frames (memory flat in length), or the "
        "reference's overlap averaging (the whole clip's latents at every step).",
    )
    head_motion: Annotated[float, Field(ge=0.0, le=1.0)] | Literal["still", "sway", "driving"] | None = Field(
        None,
        description="`still` (the portrait's keypoints), `sway` or a sway amplitude in (0, 1], or "
        "`driving` (the driving video's keypoints). Unset: `driving` with a driving video, else `still`.",
    )
    retarget: Literal["offset", "naive", "none"] = Field(
        "offset", description="How driving-video keypoints are mapped onto the portrait."
    )

    @field_validator("head_motion")
    @classmethod
    def _driving_needs_video(cls, value: object, info: ValidationInfo) -> object:
        if value == "driving" and info.context is not None and not has_driving_video(info):
            raise ValueError("head_motion 'driving' needs a driving_video")
        return value

    @model_validator(mode="after")
    def _frames_consistent(self) -> VExpressOptions:
        if self.motion_frames >= self.context_frames:
            raise ValueError(
                f"motion_frames ({self.motion_frames}) must be smaller than context_frames ({self.context_frames})"
            )
        return self

    def resolved_head_motion(self, driving_video: bool) -> tuple[Literal["still", "sway", "driving"], float]:
        """The keypoint source and sway amplitude this job uses."""
        value = self.head_motion
        if value == "driving" or (value is None and driving_video):
            return "driving", 0.0
        if value is None or value == "still" or value == 0:
            return "still", 0.0
        if value == "sway":
            return "sway", DEFAULT_SWAY_AMPLITUDE
        return "sway", float(value)


class VExpressTinyOptions(VExpressOptions):
    """``vexpress-tiny``'s options (tiny random weights, for tests): 2 steps by default."""

    num_inference_steps: int = Field(2, ge=1, le=200, description="DDIM steps.")
