"""Job options of the ``warp`` engine (torch-free: the API validates them at submit)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from models.options import EngineOptions

HEAD_MOTION_PRESETS = {"still": 0.0, "sway": 0.5}
"""``head_motion`` given as a word."""
DEFAULT_HEAD_MOTION = 0.5
"""``head_motion`` of a job that does not set it: a little motion that follows the prosody."""


class WarpOptions(EngineOptions):
    """The warp engine's options."""

    head_motion: Annotated[float, Field(ge=0.0, le=1.0)] | Literal["still", "sway"] = Field(
        DEFAULT_HEAD_MOTION,
        description="Head motion that follows the speech's prosody: 0 (still) to 1 (lively); "
        "`still` is 0, `sway` is 0.5.",
    )

    @property
    def head_motion_amount(self) -> float:
        """``head_motion`` as a number in [0, 1]."""
        if isinstance(self.head_motion, str):
            return HEAD_MOTION_PRESETS[self.head_motion]
        return float(self.head_motion)
