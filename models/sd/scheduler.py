"""DDIM setup: a fresh scheduler per render from an engine's published scheduler configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import DDIMScheduler


def build_ddim_scheduler(config: Mapping[str, Any], num_inference_steps: int | None = None) -> Any:
    """Build a fresh DDIM scheduler from `config` (``DDIMScheduler`` keyword arguments), with its
    timesteps set when `num_inference_steps` is given.

    A scheduler holds per-run state (``timesteps``, ``num_inference_steps``), so every render builds
    its own instead of sharing one between jobs or threads. Typed ``Any``: diffusers' lazily imported
    classes carry no attributes for mypy.

    Raises:
        ValueError: `num_inference_steps` outside ``[1, num_train_timesteps]``.
    """
    scheduler: Any = DDIMScheduler(**config)
    if num_inference_steps is not None:
        num_train_timesteps = scheduler.config.num_train_timesteps
        if num_inference_steps < 1 or num_inference_steps > num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, {num_train_timesteps}], got {num_inference_steps}"
            )
        scheduler.set_timesteps(num_inference_steps)
    return scheduler
