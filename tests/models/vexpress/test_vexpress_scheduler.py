"""The DDIM configuration of V-Express's inference (docs/vexpress.md)."""

from __future__ import annotations

import torch

from models.vexpress.scheduler import build_scheduler


def test_trailing_timesteps_match_the_reference() -> None:
    assert build_scheduler(25).timesteps.tolist() == list(range(999, 38, -40))
    assert build_scheduler(2).timesteps.tolist() == [999, 499]


def test_betas_are_scaled_linear_rescaled_to_zero_terminal_snr() -> None:
    scheduler = build_scheduler()
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    sqrt_ac = alphas_cumprod.sqrt()
    first, last = sqrt_ac[0].clone(), sqrt_ac[-1].clone()
    sqrt_ac = (sqrt_ac - last) * first / (first - last)  # zero terminal SNR, same first value
    torch.testing.assert_close(scheduler.alphas_cumprod, sqrt_ac**2, rtol=1e-4, atol=1e-6)
    assert float(scheduler.alphas_cumprod[999]) < 1e-6


def test_step_is_ddim_eta0_with_v_prediction() -> None:
    scheduler = build_scheduler(25)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 2, 2, generator=generator)
    v = torch.randn(1, 4, 3, 2, 2, generator=generator)
    for t, t_prev in ((999, 959), (39, -1)):
        a = scheduler.alphas_cumprod[t]
        a_prev = scheduler.alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
        x0 = a.sqrt() * x - (1 - a).sqrt() * v
        eps = a.sqrt() * v + (1 - a).sqrt() * x
        expected = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        torch.testing.assert_close(scheduler.step(v, t, x).prev_sample, expected, rtol=1e-5, atol=1e-5)
    assert scheduler.init_noise_sigma == 1.0
