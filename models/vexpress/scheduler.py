"""The DDIM sampler configuration V-Express was trained and published with (inference_v2.yaml)."""

from __future__ import annotations

from typing import Any

from models.sd.scheduler import build_ddim_scheduler


def vexpress_scheduler_config() -> dict[str, Any]:
    """Return the DDIMScheduler keyword arguments of the reference inference.

    Betas are the SD "scaled_linear" schedule rescaled to zero terminal SNR, so at ``t = 999`` the
    latents are pure noise; the UNet predicts ``v``; timesteps are "trailing", which for ``N`` steps
    gives ``round(arange(1000, 0, -1000 / N)) - 1`` (N=25: 999, 959, ..., 39; N=2: 999, 499).
    ``steps_offset`` is set as in the reference although trailing spacing ignores it.
    """
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "rescale_betas_zero_snr": True,
        "prediction_type": "v_prediction",
        "timestep_spacing": "trailing",
        "steps_offset": 1,
        "clip_sample": False,
        "set_alpha_to_one": True,
    }


def build_scheduler(num_inference_steps: int | None = None) -> Any:
    """A fresh V-Express DDIM scheduler (see ``models.sd.scheduler.build_ddim_scheduler``), with its
    timesteps set when ``num_inference_steps`` is given."""
    return build_ddim_scheduler(vexpress_scheduler_config(), num_inference_steps)
