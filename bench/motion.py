"""Audio -> motion speed and memory: motion frames/s and peak memory per generator, size and length.

Each (model, size, seconds) runs in its own subprocess so that its peak memory is its own. Weights
are random (the cost does not depend on their values): ``full`` is the published architecture (Ditto
LMDM 265/80/512x8, 50 DDIM steps; JoyVASA 70/100+10/512x8 with all 500 diffusion steps and a
chinese-hubert-base-sized HuBERT), ``tiny`` the test configs. Frames are produced chunk by chunk
(2 s, every carry through ``to_bytes``/``from_bytes``) as a worker would. Ditto's HuBERT is ONNX only
and not timed here (a stand-in session with its shapes replaces it); JoyVASA's HuBERT is included.

A job ``fps`` other than 25 runs through the renderer's motion source (`AudioMotionSource`), which
resamples the models' 25 fps motion; ``frames`` are then the job's frames. Each row also gives the
largest deviation from the fp32 row of the same model, length and fps (max |x - fp32| / max |fp32|
over the kp-info fields, the same noise: it is drawn on CPU from the seed), when that row ran.

Usage:
    python -m bench.motion [--models ditto,joyvasa] [--sizes tiny,full] [--seconds 10,60]
                           [--device cpu|cuda] [--dtype fp32|bf16|fp16] [--threads 2] [--steps N]
                           [--fps 25] [--weights-dir DIR]   # the published files instead of random weights
    python -m bench.motion --device cuda          # the GPU table (GPU_PLAN: fp32/bf16/fp16, 60 s, fps 30), < 3 min
    python -m bench.motion --emotion-effect --weights-dir DIR [--audio speech.wav] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from bench.machine import cpu_model

FPS = 25
CHUNK_FRAMES = 50
# The GPU table (--gpu): (dtype, seconds, fps) per model, within GPU_BUDGET_S (bench.liveportrait --gpu
# takes the rest of the 8 minutes the two may use together).
GPU_PLAN: list[tuple[str, float, float]] = [
    ("fp32", 10.0, 25.0),
    ("bf16", 10.0, 25.0),
    ("fp16", 10.0, 25.0),
    ("bf16", 60.0, 25.0),
    ("fp32", 10.0, 30.0),
    ("bf16", 10.0, 30.0),
]
GPU_BUDGET_S = 2.75 * 60


def build_published(model: str, weights_dir: str, device: str, dtype_name: str) -> Any:
    """A `MotionGenerator` from the published files in `weights_dir` (see docs/motion.md)."""
    from pathlib import Path

    import torch

    from models.motion.audio import DittoAudioFeatures, JoyVASAHubert, load_joyvasa_hubert, open_ditto_hubert
    from models.motion.ditto import DittoSampler, load_ditto
    from models.motion.generator import MotionGenerator
    from models.motion.joyvasa import HUBERT_DIR, JoyVASASampler, load_joyvasa

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    root = Path(weights_dir)
    if model == "ditto":
        denoiser, sampling = load_ditto(root, device=device, dtype=dtype)
        session = open_ditto_hubert(root, device)
        return MotionGenerator(
            ditto=DittoSampler(denoiser, sampling, device),
            ditto_features=lambda read, n: DittoAudioFeatures(session, read, n),
        )
    generator, template, hubert_state = load_joyvasa(root, device=device, dtype=dtype)
    hubert = load_joyvasa_hubert(root / HUBERT_DIR, hubert_state, device=device, dtype=dtype)
    encoder = JoyVASAHubert(hubert, 2 * generator.config.n_motions)
    return MotionGenerator(joyvasa=JoyVASASampler(generator, template, encoder, device=device))


def emotion_effect(generator: Any, seconds: float, audio_path: str | None) -> None:
    """Prints how far each Ditto emotion moves the motion from ``neutral`` (same audio and seed)."""
    import numpy as np

    from models.motion.options import EMOTION_NAMES, MotionOptions
    from models.motion.testing import portrait_motion

    audio = _speech(seconds) if audio_path is None else _load(audio_path)
    frames = int(np.ceil(audio.size / 16000 * FPS))
    portrait = portrait_motion()

    def run(emotion: str) -> Any:
        options = MotionOptions.model_validate({"motion_model": "ditto", "emotion": emotion})
        carry = generator.start(audio.size, frames, portrait, options, seed=0)
        return generator.next_frames(carry, frames, lambda a, b: audio[a:b], portrait, options)[0]

    neutral = run("neutral")
    lips = [6, 12, 14, 17, 19, 20]
    print(f"{'emotion':9} {'lip exp':>9} {'other exp':>9} {'pose deg':>9} {'t':>9}  (mean |x - neutral|)")
    others = [k for k in range(21) if k not in lips]
    for emotion in EMOTION_NAMES:
        m = run(emotion)
        pose = np.mean([np.abs(getattr(m, k) - getattr(neutral, k)).mean() for k in ("pitch", "yaw", "roll")])
        print(
            f"{emotion:9} {np.abs(m.exp[:, lips] - neutral.exp[:, lips]).mean():9.5f} "
            f"{np.abs(m.exp[:, others] - neutral.exp[:, others]).mean():9.5f} {pose:9.4f} "
            f"{np.abs(m.t - neutral.t).mean():9.5f}",
            flush=True,
        )


def _speech(seconds: float) -> Any:
    import numpy as np

    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _load(path: str) -> Any:
    from models.audio import load_audio

    return load_audio(path)


def build(model: str, size: str, device: str, dtype_name: str, steps: int | None) -> Any:
    """A `MotionGenerator` with random weights of the requested architecture."""
    import torch

    from models.motion.audio import DittoAudioFeatures, JoyVASAHubert
    from models.motion.ditto import DittoSampler, DittoSampling
    from models.motion.ditto_model import DITTO_V04, DittoDenoiser, tiny_ditto_config
    from models.motion.generator import MotionGenerator
    from models.motion.joyvasa import JoyVASASampler, MotionTemplate
    from models.motion.joyvasa_model import JOYVASA_HUBERT_ZH, JoyVASAGenerator, tiny_joyvasa_config
    from models.motion.testing import FakeDittoHubert, tiny_hubert

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    torch.manual_seed(0)
    if model == "ditto":
        config = DITTO_V04 if size == "full" else tiny_ditto_config()
        denoiser = DittoDenoiser(config).eval().requires_grad_(False).to(device=device, dtype=dtype)
        sampling = DittoSampling() if size == "full" else DittoSampling(steps=4, overlap=4)
        if steps is not None:
            sampling = DittoSampling(steps=steps, overlap=sampling.overlap)
        fake = FakeDittoHubert()
        return MotionGenerator(
            ditto=DittoSampler(denoiser, sampling, device),
            ditto_features=lambda read, n: DittoAudioFeatures(fake, read, n),
        )
    jconfig = JOYVASA_HUBERT_ZH if size == "full" else tiny_joyvasa_config()
    if steps is not None:
        from dataclasses import replace

        jconfig = replace(jconfig, n_diff_steps=steps)
    generator = JoyVASAGenerator(jconfig).eval().requires_grad_(False).to(device=device, dtype=dtype)
    generator.diffusion_sched.to(dtype=torch.float32)
    if size == "full":
        from transformers import HubertConfig, HubertModel

        hubert: Any = HubertModel(HubertConfig()).eval()
    else:
        hubert = tiny_hubert(jconfig.audio_dim)
    hubert = hubert.to(device=device, dtype=dtype)
    import numpy as np

    arrays = {}
    for name, n in (("exp", 63), ("scale", 1), ("t", 3), ("pitch", 1), ("yaw", 1), ("roll", 1)):
        arrays[f"min_{name}"], arrays[f"max_{name}"] = np.zeros(n, np.float32), np.ones(n, np.float32)
        arrays[f"mean_{name}"], arrays[f"std_{name}"] = np.zeros(n, np.float32), np.ones(n, np.float32)
    return MotionGenerator(
        joyvasa=JoyVASASampler(
            generator, MotionTemplate(arrays), JoyVASAHubert(hubert, 2 * jconfig.n_motions), device=device
        )
    )


def measure(
    model: str,
    size: str,
    seconds: float,
    device: str,
    dtype: str,
    steps: int | None,
    weights_dir: str | None = None,
    fps: float = FPS,
    save: str | None = None,
) -> dict[str, float]:
    """Generates `seconds` of motion from a synthetic tone at `fps`; returns timings and peak memory;
    writes the motion (parla-motion NPZ) to `save` when given."""
    import numpy as np
    import torch

    from models.engine import ChunkCarry
    from models.motion.options import MotionOptions
    from models.motion.testing import portrait_motion

    generator = (
        build_published(model, weights_dir, device, dtype)
        if weights_dir
        else build(model, size, device, dtype, steps)
    )
    portrait = portrait_motion()
    options = MotionOptions.model_validate({"motion_model": model})
    audio = _speech(seconds)
    samples = audio.size
    frames = int(np.ceil(seconds * FPS)) if fps == FPS else max(1, round(seconds * fps))
    parts: list[Any] = []

    def read(a: int, b: int) -> Any:
        return audio[a:b]

    # warm-up: one chunk of a short job (kernels, allocator)
    warm = generator.start(16000, FPS, portrait, options, seed=0)
    generator.next_frames(warm, FPS, read, portrait, options)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    if fps == FPS:
        carry = generator.start(samples, frames, portrait, options, seed=0)
        done = 0
        while done < frames:
            count = min(CHUNK_FRAMES, frames - done)
            carry = ChunkCarry.from_bytes(carry.to_bytes())
            motion, carry = generator.next_frames(carry, count, read, portrait, options)
            parts.append(motion)
            done += count
    else:  # the renderer's source: the models' 25 fps motion resampled to the job's rate
        from models.motion.source import AudioMotionSource

        source = AudioMotionSource(generator, options, portrait, audio, frames, seed=0, fps=fps)
        chunk = max(1, round(CHUNK_FRAMES * fps / FPS))
        state: Any = None
        for start in range(0, frames, chunk):
            if state is not None:
                state = ChunkCarry.from_bytes(ChunkCarry(arrays=state).to_bytes()).arrays
            motion, state = source.frames(start, min(frames, start + chunk), state)
            parts.append(motion)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_started
    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    if save:
        from models.motion.kp_info import FIELDS, MotionSequence, write_motion_npz

        arrays = {k: np.concatenate([getattr(p, k) for p in parts]).astype(np.float32) for k in FIELDS}
        write_motion_npz(save, MotionSequence(**arrays), fps=fps, model=model, dtype=dtype)
    return {"frames": frames, "seconds_s": elapsed, "cpu_s": cpu, "fps": frames / elapsed, "peak_mb": peak_mb}


def deviation(path: str, reference: str) -> float:
    """max |x - reference| / max |reference| over the kp-info fields of two motion NPZ files."""
    import numpy as np

    from models.motion.kp_info import FIELDS, read_motion_npz

    ours, ref = read_motion_npz(path)[0], read_motion_npz(reference)[0]
    return max(
        float(np.abs(getattr(ours, k) - getattr(ref, k)).max() / max(np.abs(getattr(ref, k)).max(), 1e-12))
        for k in FIELDS
    )


def _cpu_seconds() -> float:
    # All threads of this process: on a shared machine frames per CPU second is the steadier figure.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _row(
    args: argparse.Namespace, model: str, size: str, seconds: float, dtype: str, fps: float, timeout_s: float
) -> dict[str, Any] | None:
    """One (model, size, seconds, dtype, fps) case in its own subprocess; its motion saved for the
    fp32 comparison."""
    save = os.path.join(args.scratch, f"{model}-{size}-{seconds:g}-{fps:g}-{dtype}.npz")
    command = [sys.executable, "-m", "bench.motion", "--one", f"{model},{size},{seconds}"]
    command += ["--device", args.device, "--dtype", dtype, "--threads", str(args.threads)]
    command += ["--fps", str(fps), "--save", save]
    if args.steps is not None:
        command += ["--steps", str(args.steps)]
    if args.weights_dir:
        command += ["--weights-dir", args.weights_dir]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(
            f"{model:8} {size:5} {seconds:>7g} {dtype:5} {fps:5g} timed out after {timeout_s:.0f} s",
            flush=True,
        )
        return None
    if done.returncode != 0:
        print(
            f"{model:8} {size:5} {seconds:>7g} {dtype:5} {fps:5g} failed: {done.stderr.strip().splitlines()[-1:]}"
        )
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    reference = os.path.join(args.scratch, f"{model}-{size}-{seconds:g}-{fps:g}-fp32.npz")
    result["vs_fp32"] = (
        deviation(save, reference) if dtype != "fp32" and os.path.exists(reference) else float("nan")
    )
    print(
        f"{model:8} {size:5} {seconds:7.0f} {dtype:5} {fps:5g} {result['frames']:7.0f} {result['seconds_s']:8.2f} "
        f"{result['cpu_s']:8.2f} {result['fps']:9.1f} {result['frames'] / fps / result['seconds_s']:11.2f} "
        f"{result['peak_mb']:8.0f} {result['vs_fp32']:9.2e}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="ditto,joyvasa")
    parser.add_argument("--sizes", help="tiny,full (default)")
    parser.add_argument("--seconds", help="10,60 (default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", help="fp32 (default), bf16, fp16; a comma list runs each")
    parser.add_argument(
        "--fps", help="the job's frame rate (default 25: the models' own); a comma list runs each"
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="the GPU table (GPU_PLAN, full size, cuda); also what --device cuda alone runs",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="Ditto DDIM steps / JoyVASA diffusion steps")
    parser.add_argument("--weights-dir", help="published files (docs/motion.md) instead of random weights")
    parser.add_argument(
        "--emotion-effect",
        action="store_true",
        help="Ditto: how much each emotion changes the motion vs neutral",
    )
    parser.add_argument("--audio", help="speech file for --emotion-effect (default: a synthetic tone)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # model,size,seconds: run in this process
    parser.add_argument("--save", help=argparse.SUPPRESS)  # --one: write the motion here
    args = parser.parse_args()
    explicit = any(v is not None for v in (args.sizes, args.seconds, args.dtype, args.fps))
    gpu_table = args.gpu or (args.device.startswith("cuda") and not explicit and not args.one)
    if gpu_table and not args.device.startswith("cuda"):
        args.device = "cuda"
    args.sizes, args.seconds = args.sizes or "tiny,full", args.seconds or "10,60"
    args.dtype, args.fps = args.dtype or "fp32", args.fps or str(FPS)
    dtypes, rates = args.dtype.split(","), [float(f) for f in args.fps.split(",")]
    if any(d not in ("fp32", "bf16", "fp16") for d in dtypes) or any(f <= 0 for f in rates):
        parser.error(f"--dtype takes fp32, bf16, fp16 and --fps rates > 0, got {args.dtype!r}, {args.fps!r}")
    if args.emotion_effect:
        import torch

        torch.set_num_threads(args.threads)
        if args.weights_dir:
            generator = build_published("ditto", args.weights_dir, args.device, dtypes[0])
        else:
            generator = build("ditto", args.sizes.split(",")[0], args.device, dtypes[0], args.steps)
        emotion_effect(generator, float(args.seconds.split(",")[0]), args.audio)
        return
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        model, size, seconds = args.one.split(",")
        result = measure(
            model,
            size,
            float(seconds),
            args.device,
            dtypes[0],
            args.steps,
            args.weights_dir,
            rates[0],
            args.save,
        )
        print(json.dumps(result))
        return
    import tempfile

    started = time.monotonic()
    plan = (
        [(model, "full", s, d, f) for model in args.models.split(",") for d, s, f in GPU_PLAN]
        if gpu_table
        else [
            (model, size, float(seconds), dtype, fps)
            for model in args.models.split(",")
            for size in args.sizes.split(",")
            for seconds in args.seconds.split(",")
            for fps in rates
            for dtype in dtypes
        ]
    )
    budget = GPU_BUDGET_S if gpu_table else float("inf")
    print(f"machine: {cpu_model()}, {args.threads} threads, device {args.device}", flush=True)
    print(
        f"{'model':8} {'size':5} {'audio s':>7} {'dtype':5} {'fps':>5} {'frames':>7} {'time s':>8} {'cpu s':>8} "
        f"{'frames/s':>9} {'x real time':>11} {'peak MB':>8} {'vs fp32':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-motion-") as scratch:
        args.scratch = scratch
        for model, size, seconds, dtype, fps in plan:
            left = budget - (time.monotonic() - started)
            if left < 20:
                print(
                    f"{model:8} {size:5} {seconds:7.0f} {dtype:5} {fps:5g} skipped (time budget)", flush=True
                )
                continue
            _row(args, model, size, seconds, dtype, fps, timeout_s=min(left, 600.0))
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
