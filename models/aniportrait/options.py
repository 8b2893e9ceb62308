"""Job options of the ``aniportrait`` engine (torch-free: the API validates them at submit).

The defaults are the reference's (AniPortrait ``scripts/audio2vid.py`` and ``inference_v2.yaml``);
bounds are what the published model supports (its motion modules see at most 32 frames).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from models.options import EngineOptions, check_driving_video

MAX_CONTEXT_FRAMES = 32
"""Longest window of the published motion modules (their positional encoding's length)."""


class AniPortraitOptions(EngineOptions):
    """The aniportrait engine's options."""

    num_inference_steps: int = Field(25, ge=1, le=200, description="DDIM steps.")
    guidance_scale: float = Field(3.5, ge=1.0, le=20.0, description="Classifier-free guidance scale.")
    context_frames: int = Field(
        16,
        ge=2,
        le=MAX_CONTEXT_FRAMES,
        description=f"Frames per diffusion window (at most {MAX_CONTEXT_FRAMES}, the motion modules' length).",
    )
    context_overlap: int = Field(
        4, ge=0, le=MAX_CONTEXT_FRAMES - 1, description="Frames shared by consecutive windows."
    )
    head_motion: Literal["audio2pose", "driving", "still"] = Field(
        "audio2pose",
        description="Head pose from speech (`audio2pose`, the reference's), from the driving video's "
        "head (`driving`), or the portrait's pose held (`still`).",
    )

    @field_validator("head_motion")
    @classmethod
    def _driving_needs_video(cls, value: str, info: ValidationInfo) -> str:
        check_driving_video(value, info)
        return value

    @model_validator(mode="after")
    def _frames_consistent(self) -> AniPortraitOptions:
        if self.context_overlap >= self.context_frames:
            raise ValueError(
                f"context_overlap ({self.context_overlap}) must be smaller than context_frames ({self.context_frames})"
            )
        return self


class AniPortraitTinyOptions(AniPortraitOptions):
    """``aniportrait-tiny``'s options (tiny random weights, for tests): 2 steps by default."""

    num_inference_steps: int = Field(2, ge=1, le=200, description="DDIM steps.")
