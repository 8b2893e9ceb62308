"""Job options of the ``hallo`` engine (torch-free: the API validates them at submit).

Defaults are the reference's (Hallo ``configs/inference/default.yaml``); bounds are what the
published model supports (its motion modules see at most 32 frames: clip + motion frames).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from models.options import EngineOptions

MAX_WINDOW_FRAMES = 32
"""Positions of the published motion modules' encoding: clip frames + motion frames."""


class HalloOptions(EngineOptions):
    """The hallo engine's options."""

    num_inference_steps: int = Field(40, ge=1, le=200, description="DDIM steps.")
    guidance_scale: float = Field(
        3.5, ge=1.0, le=20.0, description="Classifier-free guidance scale (1: off)."
    )
    pose_weight: float = Field(
        1.0,
        ge=0.0,
        le=5.0,
        description="Weight of the full-frame (pose) audio branch (mid block, as the reference).",
    )
    face_weight: float = Field(1.0, ge=0.0, le=5.0, description="Weight of the face-region audio branch.")
    lip_weight: float = Field(1.0, ge=0.0, le=5.0, description="Weight of the lip-region audio branch.")
    face_expand_ratio: float = Field(
        1.2, ge=1.0, le=3.0, description="Expansion of the face box around the landmarks for the face mask."
    )
    clip_frames: int = Field(16, ge=1, le=MAX_WINDOW_FRAMES - 1, description="Frames per diffusion clip.")
    motion_frames: int = Field(
        2, ge=0, le=MAX_WINDOW_FRAMES - 1, description="Generated frames carried into the next clip."
    )

    motion_mask_rate: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Hallo2's long-video setting: share of motion-frame pixels outside the face box set "
        "to zero (0.25 in Hallo2's long.yaml; 0: Hallo).",
    )

    @model_validator(mode="after")
    def _fits_motion_modules(self) -> HalloOptions:
        if self.clip_frames + self.motion_frames > MAX_WINDOW_FRAMES:
            raise ValueError(
                f"clip_frames + motion_frames ({self.clip_frames + self.motion_frames}) exceed the motion "
                f"modules' {MAX_WINDOW_FRAMES} positions"
            )
        return self

    def motion_scale(self) -> tuple[float, float, float]:
        """``(pose, face, lip)``: the denoiser's ``motion_scale``."""
        return (self.pose_weight, self.face_weight, self.lip_weight)


class HalloTinyOptions(HalloOptions):
    """``hallo-tiny``'s options (tiny random weights, for tests): 2 steps, 4-frame clips by default."""

    num_inference_steps: int = Field(2, ge=1, le=200, description="DDIM steps.")
    clip_frames: int = Field(4, ge=1, le=MAX_WINDOW_FRAMES - 1, description="Frames per diffusion clip.")
