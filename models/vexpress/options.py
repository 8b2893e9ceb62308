"""Job options of the ``vexpress`` engine (torch-free: the API validates them at submit).

The defaults are the reference's (V-Express ``inference.py``); bounds are what the published
model supports (its motion modules see at most 32 frames).

Reference-compatible behaviours, each off by default (Parla's own default first):

- ``seed_mode``: ``parla`` draws each chunk's noise from a fresh generator seeded with the job's
  seed; ``reference`` reproduces the reference's noise for a seed: it seeds the global generator,
  its wav2vec2 (transformers 4.41) draws one uniform scalar per encoder layer (LayerDrop, even in
  eval mode) before the clip's noise is drawn, in the model dtype, on the CPU. Needs
  ``continuity="overlap_average"`` (the reference's schedule, the one that draws the whole clip's
  noise at once).
- ``frame_count``: ``parla`` renders ``round(duration x fps)`` frames at ``fps``; ``reference``
  renders ``int(duration x fps)`` frames cut down to the last whole window (stride
  ``context_frames - motion_frames``) and plays them at ``frames / duration`` fps, as the reference.
- ``post_filter``: ``none``, or ``median3``: the reference's 3x3x3 median over time, height and
  width (reflect padding), applied to the frames before paste-back. Needs ``overlap_average``
  (a frame's filter reads the next frame, which the motion-frames schedule renders a chunk later).
- ``kps_sequence``: a keypoint sequence (the reference's ``kps.pth``: per frame, image-left eye,
  image-right eye, nose, ``(x, y)`` in pixels of the square face crop of side ``size``, or of the ``width x height``
  frame), cut or
  stretched to the clip's frames as the reference does, then mapped with ``retarget`` (``none`` =
  the reference's ``no_retarget``). Replaces ``head_motion``.
- ``width``/``height``: the reference's framing. Parla renders a square face crop of side ``size``
  (pasted back for ``framing="full"``); with ``width`` and ``height`` the model sees the whole
  portrait resized to ``width x height`` as the reference script does (not keeping the aspect
  ratio: a bicubic resize to ``height x width``, then a Lanczos resize to ``width x height``,
  the script's two steps), the keypoints are detected in a bilinear ``width x height`` resize, and
  the video is that frame (``size`` and ``framing`` do not apply: there is no crop to paste back).
  Both are multiples of 8 (the VAE's scale; the script silently rounds down, we refuse), in
  ``[64, 1024]``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from models.options import EngineOptions, check_driving_video

MAX_KPS_SEQUENCE_FRAMES = 18_000
"""Longest ``kps_sequence`` accepted (12 minutes at 25 fps); longer sequences are refused at submit."""
MIN_FRAME_SIDE, MAX_FRAME_SIDE = 64, 1024
"""Bounds of ``width`` / ``height`` (those of the common ``size``)."""
FRAME_MULTIPLE = 8
"""``width`` / ``height`` are multiples of the VAE's scale factor."""
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
        "offset", description="How driving-video (or `kps_sequence`) keypoints are mapped onto the portrait."
    )
    seed_mode: Literal["parla", "reference"] = Field(
        "parla",
        description="`reference`: the V-Express script's noise for the same seed (global generator, "
        "after its wav2vec2's LayerDrop draws); needs continuity `overlap_average`.",
    )
    frame_count: Literal["parla", "reference"] = Field(
        "parla",
        description="`reference`: int(duration x fps) frames cut to the last whole window, played at "
        "frames / duration fps, as the V-Express script.",
    )
    post_filter: Literal["none", "median3"] = Field(
        "none",
        description="`median3`: the V-Express script's 3x3x3 median filter over time and space; needs "
        "continuity `overlap_average`.",
    )
    kps_sequence: (
        Annotated[
            list[
                Annotated[
                    list[Annotated[list[float], Field(min_length=2, max_length=2)]],
                    Field(min_length=3, max_length=3),
                ]
            ],
            Field(min_length=1, max_length=MAX_KPS_SEQUENCE_FRAMES),
        ]
        | None
    ) = Field(
        None,
        description="Per-frame keypoints [[x, y] x 3] (eye, eye, nose) in face-crop pixels (or in "
        "width x height pixels), e.g. the V-Express `kps.pth`; cut or stretched to the clip, mapped with `retarget`. Replaces head_motion.",
    )

    width: int | None = Field(
        None,
        ge=MIN_FRAME_SIDE,
        le=MAX_FRAME_SIDE,
        description="With `height`: render the whole portrait resized to width x height as the "
        "V-Express script does (no face crop; `size` and `framing` do not apply). Multiple of 8.",
    )
    height: int | None = Field(
        None,
        ge=MIN_FRAME_SIDE,
        le=MAX_FRAME_SIDE,
        description="With `width`: the frame height, see `width`. Multiple of 8.",
    )

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_the_vae_scale(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value % FRAME_MULTIPLE:
            rounded = value - value % FRAME_MULTIPLE
            raise ValueError(
                f"{info.field_name} {value} is not a multiple of {FRAME_MULTIPLE} (the VAE's scale); "
                f"the V-Express script would silently use {rounded}"
            )
        return value

    @field_validator("head_motion")
    @classmethod
    def _driving_needs_video(cls, value: object, info: ValidationInfo) -> object:
        check_driving_video(value, info)
        return value

    @model_validator(mode="after")
    def _frames_consistent(self) -> VExpressOptions:
        if self.motion_frames >= self.context_frames:
            raise ValueError(
                f"motion_frames ({self.motion_frames}) must be smaller than context_frames ({self.context_frames})"
            )
        for name, value, default in (
            ("seed_mode", self.seed_mode, "parla"),
            ("post_filter", self.post_filter, "none"),
        ):
            if value != default and self.continuity != "overlap_average":
                raise ValueError(f"{name} {value!r} needs continuity 'overlap_average'")
        if (self.width is None) != (self.height is None):
            given = "width" if self.height is None else "height"
            raise ValueError(
                f"{given} needs {'height' if given == 'width' else 'width'} too (a frame is width x height)"
            )
        if self.kps_sequence is not None and self.head_motion is not None:
            raise ValueError("give either kps_sequence or head_motion, not both")
        return self

    def frame_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of the reference's framing, or None for Parla's square face crop."""
        if self.width is None or self.height is None:
            return None
        return self.height, self.width

    def resolved_head_motion(
        self, driving_video: bool
    ) -> tuple[Literal["still", "sway", "driving", "sequence"], float]:
        """The keypoint source and sway amplitude this job uses."""
        value = self.head_motion
        if self.kps_sequence is not None:
            return "sequence", 0.0
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
