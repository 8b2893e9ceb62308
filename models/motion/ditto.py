"""Ditto (antgroup/ditto-talkinghead) audio -> motion: loading and the sliding-window sampler.

Published layout (``weights_dir``)::

    ditto_pytorch/models/lmdm_v0.4_hubert.pth    torch pickle {"model_state_dict": <LMDM denoiser>}
    ditto_cfg/v0.4_hubert_cfg_pytorch.pkl        plain-data pickle: audio2motion_cfg, default_kwargs, ...
    ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx   (audio features, `models.motion.audio`)

Sampling, as the reference's offline pipeline does it: windows of ``seq_frames`` (80) condition rows
start every ``seq_frames - overlap`` (70) frames, the last one padded with its last row. Each window
is a 50-step DDIM (eta 1, cosine schedule over 1000 steps, guidance 2) from fresh noise, with one
per-step noise list drawn once per job; it is conditioned on the motion of one frame of the previous
output (``res[len - overlap - 1]``; the source's motion for the first window). The new window is
cross-faded over ``overlap`` frames into the running sequence, and the first 202 dims (scale, pose
bins, translation) are smoothed with a 3-frame box filter, once inside each window and once over the
whole sequence at the end. `DittoSampler` does the same window by window, keeping only the tail it
still needs, so a frame is emitted as soon as no later window can change it (memory flat in length).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from core.errors import WeightsError
from models.engine import ChunkCarry
from models.motion.common import generator_state, load_checked, read_plain_pickle, restore_generator
from models.motion.ditto_model import DITTO_V04, DittoConfig, DittoDenoiser
from models.sd.checkpoint import build_on_meta, read_bin

LMDM_PATH = "ditto_pytorch/models/lmdm_v0.4_hubert.pth"
CFG_PATH = "ditto_cfg/v0.4_hubert_cfg_pytorch.pkl"
SMOOTHED_DIMS = 202  # scale, pitch/yaw/roll bins, translation: expression is never smoothed
NUM_TRAIN_STEPS = 1000
EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "contempt")

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class DittoSampling:
    """The reference's sampling settings (``default_kwargs`` of its config may override them)."""

    steps: int = 50
    guidance_scale: float = 2.0
    overlap: int = 10
    smoothing: int = 3
    clip_min: tuple[float, ...] | None = None
    clip_max: tuple[float, ...] | None = None


def read_ditto_cfg(path: Path) -> tuple[DittoConfig, DittoSampling]:
    """The model config and sampling defaults from Ditto's published config pickle.

    Raises:
        WeightsError: the file is unreadable, not plain data, or lacks ``audio2motion_cfg``.
    """
    cfg = read_plain_pickle(path)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("audio2motion_cfg"), dict):
        raise WeightsError(f"{path} has no audio2motion_cfg")
    a2m: dict[str, Any] = cfg["audio2motion_cfg"]
    defaults: dict[str, Any] = cfg.get("default_kwargs") or {}
    config = DittoConfig(
        motion_dim=int(a2m.get("motion_feat_dim", 265)),
        use_emo=bool(a2m.get("use_emo", True)),
        use_eye_open=bool(a2m.get("use_eye_open", True)),
        use_eye_ball=bool(a2m.get("use_eye_ball", True)),
        use_sc=bool(a2m.get("use_sc", True)),
        seq_frames=int(a2m.get("seq_frames", 80)),
    )
    expected = int(a2m.get("audio_feat_dim", config.cond_dim))
    if expected != config.cond_dim:
        config = replace(config, audio_dim=expected - (config.cond_dim - config.audio_dim))
    clip = defaults.get("v_min_max_for_clip")
    sampling = DittoSampling(
        steps=int(defaults.get("sampling_timesteps", 50)),
        overlap=int(defaults.get("overlap_v2", 10)),
        smoothing=int(defaults.get("smo_k_d", 3)),
        clip_min=None if clip is None else tuple(float(v) for v in np.asarray(clip[0]).reshape(-1)),
        clip_max=None if clip is None else tuple(float(v) for v in np.asarray(clip[1]).reshape(-1)),
    )
    return config, sampling


def load_ditto(
    weights_dir: Path,
    config: DittoConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[DittoDenoiser, DittoSampling]:
    """The LMDM denoiser from Ditto's published files, strictly loaded, and its sampling settings.

    Args:
        weights_dir: The published layout (see the module docstring).
        config: Overrides the config read from the published pickle (which is then optional).

    Raises:
        WeightsError: a file is missing or unreadable, or a key is missing, unexpected or misshapen.
    """
    cfg_path = weights_dir / CFG_PATH
    sampling = DittoSampling()
    if config is None:
        if not cfg_path.is_file():
            raise WeightsError(f"{weights_dir} lacks {CFG_PATH}")
        config, sampling = read_ditto_cfg(cfg_path)
    elif cfg_path.is_file():
        sampling = read_ditto_cfg(cfg_path)[1]
    model_path = weights_dir / LMDM_PATH
    if not model_path.is_file():
        raise WeightsError(f"{weights_dir} lacks {LMDM_PATH}")
    checkpoint = read_bin(model_path)
    state = checkpoint.get("model_state_dict")
    if not isinstance(state, dict):
        raise WeightsError(f"{model_path} has no model_state_dict")
    built = config
    with torch.device("meta"):
        model = build_on_meta(lambda: DittoDenoiser(built))
    load_checked(model, state, LMDM_PATH, device=device, dtype=dtype)
    return model, sampling


def ditto_schedule(steps: int) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """The reference's DDIM time pairs and ``alphas_cumprod`` (float32, cosine schedule)."""
    if not 1 <= steps <= NUM_TRAIN_STEPS:
        raise ValueError(f"steps={steps} must be in [1, {NUM_TRAIN_STEPS}]")
    s = 8e-3
    timesteps = torch.arange(NUM_TRAIN_STEPS + 1, dtype=torch.float64) / NUM_TRAIN_STEPS + s
    alphas = torch.cos(timesteps / (1 + s) * np.pi / 2).pow(2)
    alphas = alphas / alphas[0]
    betas = np.clip((1 - alphas[1:] / alphas[:-1]).numpy(), a_min=0, a_max=0.999)
    alphas_cumprod = torch.cumprod(1.0 - torch.Tensor(betas), dim=0)
    times = list(reversed(torch.linspace(-1, NUM_TRAIN_STEPS - 1, steps=steps + 1).int().tolist()))
    return list(itertools.pairwise(times)), alphas_cumprod


@dataclass
class DittoState:
    """Continuity between windows (what the carry holds).

    Attributes:
        seed: Seeds the job's per-step noise list (re-drawn on resume) and the first window's noise.
        generator: RNG state after the last window's initial noise.
        tail: (T, motion_dim) the running sequence from absolute frame ``tail_start`` on.
        tail_start: Absolute index of ``tail[0]``.
        cond_frame: (motion_dim,) the motion the next window continues from.
        window: Windows sampled so far.
        emitted: Frames emitted so far.
        num_frames: Frames of the whole job.
    """

    seed: int
    generator: npt.NDArray[np.uint8]
    tail: FloatArray
    tail_start: int
    cond_frame: FloatArray
    window: int
    emitted: int
    num_frames: int

    def to_carry(self) -> ChunkCarry:
        return ChunkCarry(
            arrays={"generator": self.generator, "tail": self.tail, "cond_frame": self.cond_frame},
            meta={
                "model": "ditto",
                "seed": self.seed,
                "tail_start": self.tail_start,
                "window": self.window,
                "emitted": self.emitted,
                "num_frames": self.num_frames,
            },
        )

    @classmethod
    def from_carry(cls, carry: ChunkCarry) -> DittoState:
        if carry.meta.get("model") != "ditto":
            raise ValueError("the carry is not a Ditto motion carry")
        return cls(
            seed=int(carry.meta["seed"]),
            generator=carry.arrays["generator"].astype(np.uint8),
            tail=carry.arrays["tail"].astype(np.float32),
            tail_start=int(carry.meta["tail_start"]),
            cond_frame=carry.arrays["cond_frame"].astype(np.float32),
            window=int(carry.meta["window"]),
            emitted=int(carry.meta["emitted"]),
            num_frames=int(carry.meta["num_frames"]),
        )


def box_smooth(seq: FloatArray, start: int, stop: int, kernel: int, length: int | None = None) -> FloatArray:
    """The reference's ``_smo``: rows ``start..stop`` of the first 202 dims become the mean of their
    ``kernel`` neighbours (read from the unsmoothed copy), clipped to ``[0, length)``."""
    if kernel <= 1:
        return seq
    source = seq.copy()
    n = seq.shape[0] if length is None else length
    half = kernel // 2
    for i in range(start, stop):
        lo, hi = max(0, i - half), min(n, i + half + 1)
        seq[i, :SMOOTHED_DIMS] = np.mean(source[lo:hi, :SMOOTHED_DIMS], axis=0)
    return seq


class DittoSampler:
    """Ditto's sliding-window DDIM sampler over a condition sequence read window by window.

    Args:
        model: The loaded denoiser (eval).
        sampling: Steps, guidance, overlap, smoothing and optional clip bounds.
        device: Where the denoiser runs; noise is always drawn on CPU (reproducible anywhere).
    """

    def __init__(
        self, model: DittoDenoiser, sampling: DittoSampling, device: str | torch.device = "cpu"
    ) -> None:
        config = model.config
        if not 0 < sampling.overlap < config.seq_frames:
            raise ValueError(f"overlap={sampling.overlap} must be in (0, {config.seq_frames})")
        self.model = model
        self.config = config
        self.sampling = sampling
        self.device = torch.device(device)
        self.stride = config.seq_frames - sampling.overlap
        pairs, alphas_cumprod = ditto_schedule(sampling.steps)
        self.time_pairs = pairs
        self._alphas_cumprod = alphas_cumprod
        self._a = torch.sqrt(1.0 / (1.0 - alphas_cumprod))
        self._b = torch.sqrt(1.0 / alphas_cumprod - 1)
        self._fuse_alpha = (np.arange(sampling.overlap, dtype=np.float32) / sampling.overlap)[:, None]

    @property
    def window_shape(self) -> tuple[int, int, int]:
        return (1, self.config.seq_frames, self.config.motion_dim)

    def num_windows(self, num_frames: int) -> int:
        return max(1, -(-num_frames // self.stride))

    def start(self, source_motion: FloatArray, num_frames: int, seed: int) -> DittoState:
        """The state before the first window.

        Args:
            source_motion: (motion_dim,) the portrait's motion vector (`source_motion_vector`).
            num_frames: Frames of the whole job (>= 1).
            seed: The job's seed.
        """
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames} must be >= 1")
        if source_motion.shape != (self.config.motion_dim,):
            raise ValueError(
                f"source_motion has shape {source_motion.shape}, expected ({self.config.motion_dim},)"
            )
        generator = torch.Generator(device="cpu").manual_seed(seed)
        self._noise_list(generator)
        return DittoState(
            seed=seed,
            generator=generator_state(generator),
            tail=np.zeros((0, self.config.motion_dim), np.float32),
            tail_start=0,
            cond_frame=source_motion.astype(np.float32),
            window=0,
            emitted=0,
            num_frames=num_frames,
        )

    def _noise_list(self, generator: torch.Generator) -> list[torch.Tensor]:
        return [torch.randn(self.window_shape, generator=generator) for _, nxt in self.time_pairs if nxt >= 0]

    @torch.no_grad()
    def sample_window(
        self, cond_frame: FloatArray, cond: FloatArray, x: torch.Tensor, noise: list[torch.Tensor]
    ) -> FloatArray:
        """One window's DDIM: (seq_frames, motion_dim) from the initial noise `x` (1, S, D) and the
        per-step noise list, given the condition frame (D,) and the condition rows (S, C)."""
        model, dev = self.model, self.device
        dtype = next(model.parameters()).dtype
        encoded = model.encode_cond(torch.from_numpy(cond)[None].to(dev, dtype))
        frame = torch.from_numpy(cond_frame)[None].to(dev, dtype)
        x = x.to(dev, dtype)
        i = 0
        for time, time_next in self.time_pairs:
            times = torch.full((1,), time, device=dev, dtype=torch.long)
            x_start = model.guided_x0(x, frame, encoded, times, self.sampling.guidance_scale)
            if time_next < 0:
                x = x_start
                continue
            pred_noise = (self._a[time] * x - x_start / self._b[time]).to(dtype)
            alpha, alpha_next = self._alphas_cumprod[time], self._alphas_cumprod[time_next]
            sigma = ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
            c = (1 - alpha_next - sigma**2).sqrt()
            x = x_start * alpha_next.sqrt() + c * pred_noise + sigma * noise[i].to(dev, dtype)
            i += 1
        return x[0].float().cpu().numpy()

    def step(
        self, state: DittoState, read_cond: Callable[[int, int], FloatArray]
    ) -> tuple[FloatArray, DittoState]:
        """Samples the next window and returns the frames it makes final.

        Args:
            state: From `start` or a previous `step` (not modified).
            read_cond: ``read_cond(a, b)`` -> condition rows for frames ``[a, b)``, ``b <= num_frames``.

        Returns:
            (n, motion_dim) frames ``state.emitted .. state.emitted + n`` (raw motion vectors), and the
            new state. After the last window every frame has been emitted.
        """
        cfg, smp = self.config, self.sampling
        n_total, start = state.num_frames, state.window * self.stride
        if start >= n_total and state.window > 0:
            raise ValueError("every window has been sampled")
        cond = read_cond(start, min(start + cfg.seq_frames, n_total)).astype(np.float32)
        if cond.ndim != 2 or cond.shape[1] != cfg.cond_dim or cond.shape[0] < 1:
            raise ValueError(f"condition rows have shape {cond.shape}, expected (n, {cfg.cond_dim})")
        if cond.shape[0] < cfg.seq_frames:
            cond = np.concatenate([cond, np.repeat(cond[-1:], cfg.seq_frames - cond.shape[0], 0)], 0)

        seeded = torch.Generator(device="cpu").manual_seed(state.seed)
        noise = self._noise_list(seeded)
        generator = restore_generator(state.generator)
        x = torch.randn(self.window_shape, generator=generator)
        pred = self.sample_window(state.cond_frame, cond, x, noise)

        tail = state.tail
        if state.window == 0:
            tail = box_smooth(pred.copy(), 0, pred.shape[0], smp.smoothing)
        else:
            fuse = tail.shape[0] - smp.overlap
            tail = tail.copy()
            tail[fuse:] = tail[fuse:] * (1 - self._fuse_alpha) + pred[: smp.overlap] * self._fuse_alpha
            tail = np.concatenate([tail, pred[smp.overlap :]], 0)
            n = tail.shape[0]
            tail = box_smooth(tail, n - self.stride - smp.overlap, n - self.stride + 1, smp.smoothing)
        length = state.tail_start + tail.shape[0]  # absolute length of the running sequence
        cond_frame = tail[length - smp.overlap - 1 - state.tail_start].copy()

        last = start + self.stride >= n_total
        stop = n_total if last else length - smp.overlap - 1
        final = self._finalize(tail, state.tail_start, state.emitted, stop, n_total if last else None)
        keep_from = max(0, stop - 1)
        new_state = DittoState(
            seed=state.seed,
            generator=generator_state(generator),
            tail=tail[keep_from - state.tail_start :].copy(),
            tail_start=keep_from,
            cond_frame=cond_frame,
            window=state.window + 1,
            emitted=stop,
            num_frames=n_total,
        )
        return final, new_state

    def _finalize(
        self, tail: FloatArray, tail_start: int, begin: int, stop: int, end: int | None
    ) -> FloatArray:
        # The reference's closing pass: box filter over the whole (truncated) sequence.
        half = self.sampling.smoothing // 2
        lo = max(0, begin - half)
        hi = stop + half if end is None else end
        window = tail[lo - tail_start : hi - tail_start].copy()
        length = None if end is None else end - lo
        window = box_smooth(window, begin - lo, stop - lo, self.sampling.smoothing, length)
        out = window[begin - lo : stop - lo]
        if self.sampling.clip_min is not None and self.sampling.clip_max is not None:
            out = np.clip(out, np.asarray(self.sampling.clip_min), np.asarray(self.sampling.clip_max))
        return out.astype(np.float32)

    def generate(
        self,
        source_motion: FloatArray,
        read_cond: Callable[[int, int], FloatArray],
        num_frames: int,
        seed: int,
    ) -> FloatArray:
        """The whole sequence in one go: (num_frames, motion_dim)."""
        state = self.start(source_motion, num_frames, seed)
        parts = []
        while state.emitted < num_frames:
            frames, state = self.step(state, read_cond)
            parts.append(frames)
        return np.concatenate(parts, 0)


def source_motion_vector(info: Mapping[str, npt.ArrayLike]) -> FloatArray:
    """The portrait's motion vector (the first window's condition frame) from its LivePortrait
    motion-extractor output: ``scale`` (1), ``pitch``/``yaw``/``roll`` as 66 raw bin logits, ``t`` (3),
    ``exp`` (63). Scale is stored minus one, as the reference does."""
    sizes = {"scale": 1, "pitch": 66, "yaw": 66, "roll": 66, "t": 3, "exp": 63}
    parts = []
    for key, size in sizes.items():
        if key not in info:
            raise ValueError(f"source motion lacks {key!r}")
        value = np.asarray(info[key], dtype=np.float32).reshape(-1)
        if value.shape != (size,):
            raise ValueError(f"source motion {key!r} has {value.size} values, expected {size}")
        parts.append(value - 1 if key == "scale" else value)
    vector: FloatArray = np.concatenate(parts).astype(np.float32)
    return vector


def emotion_probs(emotion: int | Sequence[int], strength: float = 1.0) -> FloatArray:
    """The reference's emotion condition: softmax of 8 at the chosen class(es), 0 elsewhere.

    `strength` scales those logits (1 = the reference; 0 = uniform, i.e. no emotion preference;
    above 1 = a sharper distribution than the model was trained with)."""
    labels = [emotion] if isinstance(emotion, int) else list(emotion)
    if not labels or any(not 0 <= label < len(EMOTIONS) for label in labels):
        raise ValueError(f"emotion {emotion!r} must be class indices in [0, {len(EMOTIONS)})")
    logits = np.zeros(len(EMOTIONS), np.float64)
    logits[labels] = 8.0 * strength
    probs = np.exp(logits - logits.max())
    normalized: FloatArray = (probs / probs.sum()).astype(np.float32)
    return normalized


def condition_rows(
    audio: FloatArray,
    config: DittoConfig,
    emotion: FloatArray,
    eye_open: FloatArray,
    eye_ball: FloatArray,
    source_kp: FloatArray,
) -> FloatArray:
    """Per-frame condition rows, as the reference's ``ConditionHandler`` lays them out for one image.

    Args:
        audio: (n, audio_dim) HuBERT features.
        emotion: (8,) or (n, 8) emotion probabilities (`emotion_probs`).
        eye_open: (2,) or (n, 2) left/right eye-open ratios.
        eye_ball: (6,) or (n, 6) eyeball offsets.
        source_kp: (63,) the portrait's canonical keypoints.

    Returns:
        (n, cond_dim) rows.
    """
    n = audio.shape[0]
    if audio.shape != (n, config.audio_dim):
        raise ValueError(f"audio features have shape {audio.shape}, expected (n, {config.audio_dim})")
    parts = [audio.astype(np.float32)]
    extras = (
        (config.use_emo, emotion, 8, "emotion"),
        (config.use_eye_open, eye_open, 2, "eye_open"),
        (config.use_eye_ball, eye_ball, 6, "eye_ball"),
        (config.use_sc, source_kp, 63, "source_kp"),
    )
    for used, value, size, name in extras:
        if not used:
            continue
        value = np.asarray(value, dtype=np.float32)
        if value.shape == (size,):
            value = np.broadcast_to(value, (n, size))
        if value.shape != (n, size):
            raise ValueError(f"{name} has shape {value.shape}, expected ({size},) or ({n}, {size})")
        parts.append(value)
    return np.concatenate(parts, 1).astype(np.float32)


def bins_to_degrees(logits: FloatArray) -> FloatArray:
    """(F, 66) pose-bin logits -> (F, 1) degrees: softmax expectation, 3 degrees a bin from -97.5."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    degrees: FloatArray = (
        (probs * np.arange(66, dtype=np.float32)).sum(axis=1, keepdims=True) * 3 - 97.5
    ).astype(np.float32)
    return degrees


def motion_to_kp_info(frames: FloatArray) -> dict[str, FloatArray]:
    """(F, 265) Ditto motion -> LivePortrait kp-info arrays: ``scale`` (F, 1), ``pitch``/``yaw``/``roll``
    (F, 1) degrees, ``t`` (F, 3), ``exp`` (F, 21, 3)."""
    if frames.ndim != 2 or frames.shape[1] != 265:
        raise ValueError(f"Ditto motion has shape {frames.shape}, expected (F, 265)")
    return {
        "scale": (frames[:, 0:1] + 1).astype(np.float32),
        "pitch": bins_to_degrees(frames[:, 1:67]),
        "yaw": bins_to_degrees(frames[:, 67:133]),
        "roll": bins_to_degrees(frames[:, 133:199]),
        "t": frames[:, 199:202].astype(np.float32),
        "exp": frames[:, 202:265].reshape(-1, 21, 3).astype(np.float32),
    }


__all__ = [
    "DITTO_V04",
    "EMOTIONS",
    "DittoConfig",
    "DittoSampler",
    "DittoSampling",
    "DittoState",
    "load_ditto",
]
