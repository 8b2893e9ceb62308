"""JoyVASA (jdh-algo/JoyVASA) audio -> motion: loading, the motion template and the window sampler.

Published layout (``weights_dir``)::

    JoyVASA/motion_generator/motion_generator_hubert_chinese.pt
        torch pickle {"args": argparse.Namespace, "model": DitTalkingHead.state_dict(), "iter": int}
    JoyVASA/motion_template/motion_template.pkl       plain-data pickle of numpy arrays
    chinese-hubert-base/                              transformers HubertModel (config.json + weights)

The checkpoint is read with ``torch.load(weights_only=True)`` admitting only ``argparse.Namespace``
besides tensors; the template with the plain-data unpickler (`models.motion.common`).

Sampling, as the reference's ``gen_motion_sequence``: the 16 kHz audio is padded with 1280 zeros
before and 640 after, cut into windows of ``n_motions`` frames (no overlap; the last padded with zeros
or its last sample), and each window is sampled by ancestral DDPM over all ``n_diff_steps`` steps
(guidance 2.8 on audio, incremental mode) from the *same* initial noise (drawn once, for the first
window), conditioned on the last ``n_prev_motions`` motion frames and mapped audio features of the
previous window (learned start rows for the first). The 70-d output is de-normalised with the template
(expression by mean/std, the rest by min/max) and scale, translation and pose are smoothed by an
exponential moving average (alpha 0.01).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from core.errors import WeightsError
from models.engine import ChunkCarry
from models.motion.common import generator_state, load_checked, read_plain_pickle, restore_generator
from models.motion.joyvasa_model import (
    JOYVASA_HUBERT_ZH,
    DiffusionSchedule,
    JoyVASAConfig,
    JoyVASAGenerator,
    sinusoidal_table,
)
from models.sd.checkpoint import build_on_meta, check_keys

GENERATOR_PATH = "JoyVASA/motion_generator/motion_generator_hubert_chinese.pt"
TEMPLATE_PATH = "JoyVASA/motion_template/motion_template.pkl"
HUBERT_DIR = "chinese-hubert-base"
AUDIO_ENCODER_PREFIX = "audio_encoder."
SAMPLE_RATE = 16000
PAD_BEFORE, PAD_AFTER = 1280, 640
TEMPLATE_KEYS = (
    "mean_exp", "std_exp", "min_scale", "max_scale", "min_t", "max_t",
    "min_pitch", "max_pitch", "min_yaw", "max_yaw", "min_roll", "max_roll",
)  # fmt: skip

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class JoyVASASampling:
    guidance_scale: float = 2.8
    smooth_alpha: float | None = 0.01  # None: no smoothing (the reference's is_smooth_motion=False)


@dataclass(frozen=True)
class MotionTemplate:
    """De-normalisation statistics (float32 arrays, shapes (63,), (1,), (3,), (1,) x3)."""

    arrays: dict[str, FloatArray]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], label: str) -> MotionTemplate:
        missing = [k for k in TEMPLATE_KEYS if k not in data]
        if missing:
            raise WeightsError(f"{label} lacks {', '.join(missing)}")
        arrays = {k: np.asarray(data[k], dtype=np.float32).reshape(-1) for k in TEMPLATE_KEYS}
        sizes = {"exp": 63, "scale": 1, "t": 3, "pitch": 1, "yaw": 1, "roll": 1}
        wrong = [k for k in TEMPLATE_KEYS if arrays[k].shape != (sizes[k.split("_", 1)[1]],)]
        if wrong:
            raise WeightsError(f"{label}: wrong shapes for {', '.join(wrong)}")
        return cls(arrays)

    def denormalize(self, motion: FloatArray) -> dict[str, FloatArray]:
        """(F, 70) normalised motion -> exp (F, 63), scale (F, 1), t (F, 3), pitch/yaw/roll (F, 1)."""
        a = self.arrays

        def span(name: str, lo: int, hi: int) -> FloatArray:
            return motion[:, lo:hi] * (a[f"max_{name}"] - a[f"min_{name}"]) + a[f"min_{name}"]

        return {
            "exp": motion[:, :63] * a["std_exp"] + a["mean_exp"],
            "scale": span("scale", 63, 64),
            "t": span("t", 64, 67),
            "pitch": span("pitch", 67, 68),
            "yaw": span("yaw", 68, 69),
            "roll": span("roll", 69, 70),
        }


def read_template(path: Path) -> MotionTemplate:
    data = read_plain_pickle(path)
    if not isinstance(data, dict):
        raise WeightsError(f"{path} is not a dict of arrays")
    return MotionTemplate.from_mapping(data, str(path))


def config_from_args(args: Mapping[str, Any]) -> JoyVASAConfig:
    """The generator config from the checkpoint's ``args`` (the fields the reference reads)."""
    defaults = JOYVASA_HUBERT_ZH
    try:
        return JoyVASAConfig(
            motion_dim=int(args.get("motion_feat_dim", defaults.motion_dim)),
            n_motions=int(args.get("n_motions", defaults.n_motions)),
            n_prev_motions=int(args.get("n_prev_motions", defaults.n_prev_motions)),
            feature_dim=int(args.get("feature_dim", defaults.feature_dim)),
            n_diff_steps=int(args.get("n_diff_steps", defaults.n_diff_steps)),
            fps=int(args.get("fps", defaults.fps)),
            pad_mode=str(args.get("pad_mode") or defaults.pad_mode),
        )
    except (TypeError, ValueError) as error:
        raise WeightsError(f"checkpoint args are not usable: {error}") from error


def read_generator_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(args as a dict, the ``model`` state dict) of the published checkpoint; never runs code."""
    if not path.is_file():
        raise WeightsError(f"missing {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # UnpicklingError for any other global, RuntimeError for bad files
        raise WeightsError(f"cannot load {path} as tensors + plain args: {error}") from error
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        raise WeightsError(f"{path} has no 'model' state dict")
    args = data.get("args")
    args_dict = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    return args_dict, dict(data["model"])


def derived_buffers(config: JoyVASAConfig) -> dict[str, torch.Tensor]:
    """The buffers computed from the config (`JoyVASAGenerator.DERIVED_KEYS`)."""
    schedule = DiffusionSchedule(config.n_diff_steps)
    length = config.n_prev_motions + config.n_motions
    return {
        "denoising_net.TE.pe": sinusoidal_table(max(501, config.n_diff_steps + 1), config.feature_dim),
        "denoising_net.PE.pe": sinusoidal_table(600, config.feature_dim),
        "denoising_net.alignment_mask": ~torch.eye(length, dtype=torch.bool),
        **{f"diffusion_sched.{k}": v for k, v in schedule.state_dict().items()},
    }


def load_joyvasa(
    weights_dir: Path,
    config: JoyVASAConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[JoyVASAGenerator, MotionTemplate, dict[str, torch.Tensor]]:
    """The motion generator (strictly loaded), its template, and the checkpoint's HuBERT tensors.

    Returns:
        The generator, the template, and the ``audio_encoder.*`` entries (prefix removed; empty if the
        checkpoint has none), which `models.motion.audio.load_joyvasa_hubert` loads over the
        ``chinese-hubert-base`` directory, as the reference's non-strict load does.

    Raises:
        WeightsError: a file is missing or unreadable, or a key is missing, unexpected or misshapen.
    """
    args, state = read_generator_checkpoint(weights_dir / GENERATOR_PATH)
    config = config or config_from_args(args)
    template = read_template(weights_dir / TEMPLATE_PATH)
    hubert_state = {
        k[len(AUDIO_ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(AUDIO_ENCODER_PREFIX)
    }
    state = {k: v for k, v in state.items() if not k.startswith(AUDIO_ENCODER_PREFIX)}
    state.pop("denoising_net.TE.pe", None)  # as the reference: its length need not match

    for key, value in derived_buffers(config).items():
        state.setdefault(key, value)
    built = config
    with torch.device("meta"):
        model = build_on_meta(lambda: JoyVASAGenerator(built))
    check_keys(model, state, GENERATOR_PATH)
    schedule = {k: state[k].float().clone() for k in state if k.startswith("diffusion_sched.")}
    load_checked(model, state, GENERATOR_PATH, device=device, dtype=dtype)
    for key, value in schedule.items():  # the schedule stays float32 whatever the model dtype
        setattr(model.diffusion_sched, key.split(".", 1)[1], value.to(device))
    return model, template, hubert_state


@dataclass
class JoyVASAState:
    """Continuity between windows (what the carry holds).

    Attributes:
        seed: Seeds the first window's initial noise, reused by every window (re-drawn on resume).
        generator: RNG state after the last window.
        prev_motion: (n_prev_motions, motion_dim) normalised motion the next window continues.
        prev_audio: (n_prev_motions, feature_dim) mapped audio features of those frames.
        smoothed: (8,) the EMA state (scale, t, pitch, yaw, roll) or empty before the first frame.
        window: Windows sampled so far.
        emitted: Frames emitted so far.
        num_samples: Length of the job's audio in samples (16 kHz).
    """

    seed: int
    generator: npt.NDArray[np.uint8]
    prev_motion: FloatArray
    prev_audio: FloatArray
    smoothed: FloatArray
    window: int
    emitted: int
    num_samples: int

    def to_carry(self) -> ChunkCarry:
        return ChunkCarry(
            arrays={
                "generator": self.generator,
                "prev_motion": self.prev_motion,
                "prev_audio": self.prev_audio,
                "smoothed": self.smoothed,
            },
            meta={
                "model": "joyvasa",
                "seed": self.seed,
                "window": self.window,
                "emitted": self.emitted,
                "num_samples": self.num_samples,
            },
        )

    @classmethod
    def from_carry(cls, carry: ChunkCarry) -> JoyVASAState:
        if carry.meta.get("model") != "joyvasa":
            raise ValueError("the carry is not a JoyVASA motion carry")
        arrays = carry.arrays
        return cls(
            seed=int(carry.meta["seed"]),
            generator=arrays["generator"].astype(np.uint8),
            prev_motion=arrays["prev_motion"].astype(np.float32),
            prev_audio=arrays["prev_audio"].astype(np.float32),
            smoothed=arrays["smoothed"].astype(np.float32),
            window=int(carry.meta["window"]),
            emitted=int(carry.meta["emitted"]),
            num_samples=int(carry.meta["num_samples"]),
        )


@dataclass(frozen=True)
class JoyVASAPlan:
    """The reference's window arithmetic for an audio of ``num_samples`` samples."""

    num_windows: int
    padding_samples: int
    padding_frames: int
    num_frames: int


class JoyVASASampler:
    """JoyVASA's window sampler. `encode_audio` maps a (1, samples) window of the padded audio to
    HuBERT hidden states (1, 2 * n_motions, audio_dim) (`models.motion.audio.JoyVASAHubert`)."""

    def __init__(
        self,
        model: JoyVASAGenerator,
        template: MotionTemplate,
        encode_audio: Callable[[torch.Tensor], torch.Tensor],
        sampling: JoyVASASampling | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model
        self.config = model.config
        self.template = template
        self.encode_audio = encode_audio
        self.sampling = sampling or JoyVASASampling()
        self.device = torch.device(device)
        self.audio_unit = SAMPLE_RATE / self.config.fps
        self.window_samples = round(self.audio_unit * self.config.n_motions)

    def plan(self, num_samples: int) -> JoyVASAPlan:
        padded = num_samples + PAD_BEFORE + PAD_AFTER
        clip_len = int(padded / SAMPLE_RATE * self.config.fps)
        n = self.config.n_motions
        windows = 1 if clip_len <= n else math.ceil(clip_len / n)
        padding_samples = self.window_samples * windows - padded
        padding_frames = math.ceil(padding_samples / self.audio_unit) if padding_samples > 0 else 0
        return JoyVASAPlan(windows, padding_samples, padding_frames, windows * n - padding_frames)

    def start(self, num_samples: int, seed: int) -> JoyVASAState:
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be >= 1")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        self._initial_noise(generator)
        return JoyVASAState(
            seed=seed,
            generator=generator_state(generator),
            prev_motion=self.model.start_motion_feat[0].detach().float().cpu().numpy(),
            prev_audio=self.model.start_audio_feat[0].detach().float().cpu().numpy(),
            smoothed=np.zeros((0,), np.float32),
            window=0,
            emitted=0,
            num_samples=num_samples,
        )

    def _initial_noise(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((1, self.config.n_motions, self.config.motion_dim), generator=generator)

    def window_audio(self, state: JoyVASAState, read_audio: Callable[[int, int], FloatArray]) -> FloatArray:
        """Window ``state.window``'s samples of the padded audio, from ``read_audio(a, b)`` (the job's
        samples ``[a, b)``). The reference pads 1280 zeros before and 640 after, then the last window
        with zeros (in ``replicate`` mode with the padded audio's last sample: also a zero)."""
        n = self.config.n_motions
        lo = round(state.window * n * self.audio_unit) - PAD_BEFORE
        hi = round((state.window + 1) * n * self.audio_unit) - PAD_BEFORE
        a, b = min(max(lo, 0), state.num_samples), min(max(hi, 0), state.num_samples)
        out = np.zeros((hi - lo,), np.float32)
        if b > a:
            body = read_audio(a, b)
            if body.shape != (b - a,):
                raise ValueError(f"read_audio({a}, {b}) returned shape {body.shape}")
            out[a - lo : b - lo] = body
        return out

    @torch.no_grad()
    def sample_window(
        self,
        audio_feat: torch.Tensor,
        prev_motion: torch.Tensor,
        prev_audio: torch.Tensor,
        noise_at_t: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Ancestral sampling of one window: (1, n_motions, motion_dim) normalised motion."""
        model, cfg, dev = self.model, self.config, self.device
        sched = model.diffusion_sched
        dtype = audio_feat.dtype
        null = model.null_audio_feat.expand(1, cfg.n_motions, -1).to(dtype)
        audio_in = torch.cat([null, audio_feat], 0)
        prev_motion_in = prev_motion.expand(2, -1, -1)
        prev_audio_in = prev_audio.expand(2, -1, -1)
        x = noise_at_t.to(dev, dtype)
        for t in range(sched.num_steps, 0, -1):
            z = torch.randn(x.shape, generator=generator) if t > 1 else torch.zeros(x.shape)
            alpha, alpha_bar, alpha_bar_prev = sched.alphas[t], sched.alpha_bars[t], sched.alpha_bars[t - 1]
            sigma = sched.sigmas_inflex[t]
            steps = torch.full((2,), t, device=dev, dtype=torch.long)
            results = model.denoising_net(x.expand(2, -1, -1), audio_in, prev_motion_in, prev_audio_in, steps)
            uncond, cond = results[0:1, -cfg.n_motions :], results[1:2, -cfg.n_motions :]
            target = uncond + self.sampling.guidance_scale * (cond - uncond)
            c0 = (1 - alpha_bar_prev) * torch.sqrt(alpha) / (1 - alpha_bar)
            c1 = (1 - alpha) * torch.sqrt(alpha_bar_prev) / (1 - alpha_bar)
            x = c0 * x + c1 * target + sigma * z.to(dev, dtype)
        return x

    def step(
        self, state: JoyVASAState, read_audio: Callable[[int, int], FloatArray]
    ) -> tuple[dict[str, FloatArray], FloatArray, JoyVASAState]:
        """Samples the next window.

        Returns:
            The de-normalised, smoothed motion of its frames (dict as `MotionTemplate.denormalize`),
            the raw normalised motion (n, 70), and the new state.
        """
        plan = self.plan(state.num_samples)
        if state.window >= plan.num_windows:
            raise ValueError("every window has been sampled")
        model, dev = self.model, self.device
        dtype = next(model.parameters()).dtype
        audio = torch.from_numpy(self.window_audio(state, read_audio))[None].to(dev, dtype)
        audio_feat = model.map_audio(self.encode_audio(audio).to(dev, dtype))
        noise = self._initial_noise(torch.Generator(device="cpu").manual_seed(state.seed))
        generator = restore_generator(state.generator)
        prev_motion = torch.from_numpy(state.prev_motion)[None].to(dev, dtype)
        prev_audio = torch.from_numpy(state.prev_audio)[None].to(dev, dtype)
        motion = self.sample_window(audio_feat, prev_motion, prev_audio, noise, generator)
        n_prev = self.config.n_prev_motions
        new_prev_motion = motion[0, -n_prev:].float().cpu().numpy()
        new_prev_audio = audio_feat[0, -n_prev:].float().cpu().numpy()
        raw = motion[0].float().cpu().numpy()
        if state.window == plan.num_windows - 1 and plan.padding_frames > 0:
            raw = raw[: -plan.padding_frames]
        frames = self.template.denormalize(raw)
        smoothed = self._smooth(frames, state.smoothed)
        new_state = JoyVASAState(
            seed=state.seed,
            generator=generator_state(generator),
            prev_motion=new_prev_motion,
            prev_audio=new_prev_audio,
            smoothed=smoothed,
            window=state.window + 1,
            emitted=state.emitted + raw.shape[0],
            num_samples=state.num_samples,
        )
        return frames, raw, new_state

    def _smooth(self, frames: dict[str, FloatArray], state: FloatArray) -> FloatArray:
        # The reference's EMA over [scale, t, pitch, yaw, roll]; expression is left as generated.
        alpha = self.sampling.smooth_alpha
        if alpha is None or frames["exp"].shape[0] == 0:
            return state
        values = np.concatenate([frames[k] for k in ("scale", "t", "pitch", "yaw", "roll")], 1)
        out = np.empty_like(values)
        current = state if state.size else None
        for i, value in enumerate(values):
            current = value if current is None else alpha * value + (1 - alpha) * current
            out[i] = current
        frames["scale"], frames["t"] = out[:, 0:1], out[:, 1:4]
        frames["pitch"], frames["yaw"], frames["roll"] = out[:, 4:5], out[:, 5:6], out[:, 6:7]
        assert current is not None
        return current.astype(np.float32)
