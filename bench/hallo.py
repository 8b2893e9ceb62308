"""Hallo engine speed and memory: frames/s, time per clip, peak memory, for 10 s against 120 s jobs.

Each case runs in its own subprocess (its own peak RSS and peak CUDA memory). The portrait and the
speech are ``tests/assets``' (the speech tiled to the length); chunks run as the worker runs them,
every carry through ``to_bytes``/``from_bytes``.

- ``--config tiny``: ``hallo-tiny``'s random modules (CPU table, tests' sizes);
- ``--config full``: the published sizes (SD1.5 UNets, wav2vec2-base, sd-vae-ft-mse layout) with
  random weights and the stand-in identity embedding (no weights can be downloaded): for the GPU.

The memory-flat check (``--memory``): the same settings on 10 s and 120 s of audio, every clip of
both jobs rendered (``--max-chunks 0``), peak RSS (and CUDA peak) compared: the prepared state grows
only by the conv features (50 KiB per second), the rest is per clip.

    python -m bench.hallo --config tiny --sizes 64,128 --seconds 8
    python -m bench.hallo --config tiny --memory --size 64 --steps 1 --guidance 1 --clip-frames 16
    python -m bench.hallo --config full --device cuda --dtype fp16 --sizes 512 --seconds 10,120 --max-chunks 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.machine import cpu_model

ASSETS = Path(__file__).resolve().parents[1] / "tests" / "assets"


def full_random_engine(device: str, dtype: str) -> Any:
    """``HalloEngine`` on random weights at the published sizes."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from models.hallo.arcface import StandInEmbedder
    from models.hallo.checkpoint import build_modules
    from models.hallo.engine import HalloComponents, HalloEngine
    from models.sd.configs import sd15_unet_config
    from models.sd.pipeline import dtype_from_name
    from models.sd.testing import sd_vae

    torch_dtype = dtype_from_name(dtype, torch.device(device))
    modules = build_modules(sd15_unet_config(), device=device, dtype=torch_dtype)
    vae = sd_vae((128, 256, 512, 512), 2, 32, 512).to(device, torch_dtype)
    audio_encoder: Any = Wav2Vec2Model(Wav2Vec2Config()).eval().to(device, torch_dtype)  # wav2vec2-base
    components = HalloComponents(modules, vae, audio_encoder, StandInEmbedder(0))
    return HalloEngine(device=device, dtype=dtype, components=components)


def measure(args: argparse.Namespace, size: int, seconds: float) -> dict[str, float]:
    import numpy as np
    import torch
    from PIL import Image

    from models.audio import load_audio
    from models.engine import ChunkCarry, RenderInputs, make_params

    torch.set_num_threads(args.threads)
    if args.config == "tiny":
        from models.hallo.testing import tiny_engine

        engine = tiny_engine()
    else:
        engine = full_random_engine(args.device, args.dtype)
        engine.warmup_size = size
    cuda = engine.device.type == "cuda"
    started = time.perf_counter()
    engine.warmup()
    warmup_s = time.perf_counter() - started
    image = np.asarray(Image.open(ASSETS / "portrait.png").convert("RGB"))
    audio = load_audio(ASSETS / "speech.wav")
    audio = np.tile(audio, int(np.ceil(seconds * 16000 / len(audio))))[: int(seconds * 16000)]
    options: dict[str, Any] = {"num_inference_steps": args.steps, "guidance_scale": args.guidance}
    if args.clip_frames:
        options["clip_frames"] = args.clip_frames
    params = make_params(engine.options_model, size=size, fps=25.0, **options)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    prepared = engine.prepare(RenderInputs(image=image, audio=audio), params)
    prepare_s = time.perf_counter() - started
    rss_prepared = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    chunks = engine.plan(prepared)
    if args.max_chunks:
        chunks = chunks[: args.max_chunks]
    carry, times, frames = None, [], 0
    for chunk in chunks:
        started = time.perf_counter()
        out, carry = engine.render_chunk(prepared, chunk, carry)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        carry = ChunkCarry.from_bytes(carry.to_bytes())
        frames += len(out)
    steady = times[1:] or times
    return {
        "seconds": seconds,
        "size": size,
        "frames": prepared.num_frames,
        "clips": len(chunks),
        "warmup_s": warmup_s,
        "prepare_s": prepare_s,
        "first_clip_s": times[0],
        "clip_s": sum(steady) / len(steady),
        "fps": frames / sum(times),
        "rss_prepared_mb": rss_prepared,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
    }


def _run_case(argv: list[str], size: int, seconds: float) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.hallo", *argv, "--one", str(size), str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"case size={size} seconds={seconds} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="fp16, bf16 or fp32 (default: the engine's)")
    parser.add_argument("--sizes", default="64")
    parser.add_argument("--seconds", default="8", help="comma-separated audio lengths")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=3.5)
    parser.add_argument("--clip-frames", type=int, default=0, help="0: the engine's default")
    parser.add_argument("--max-chunks", type=int, default=0, help="render only the first N clips (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--memory", action="store_true", help="the memory-flat check: 10 s and 120 s, all clips"
    )
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args, int(args.one[0]), float(args.one[1]))))
        return
    passed = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--memory"]
    sizes = [int(s) for s in args.sizes.split(",")]
    lengths = [10.0, 120.0] if args.memory else [float(s) for s in args.seconds.split(",")]
    settings = f"steps {args.steps}, guidance {args.guidance}, clip frames {args.clip_frames or 'default'}"
    print(f"hallo {args.config} on {args.device} ({cpu_model()}), {settings}, threads {args.threads}")
    print(
        "| size | audio s | frames | clips | warm-up s | prepare s | first clip s | clip s | frames/s "
        "| peak RSS after prepare MB | peak RSS MB | CUDA peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for size in sizes:
        for seconds in lengths:
            r = _run_case(passed, size, seconds)
            results.append(r)
            print(
                f"| {size} | {seconds:g} | {r['frames']:.0f} | {r['clips']:.0f} | {r['warmup_s']:.2f} "
                f"| {r['prepare_s']:.2f} | {r['first_clip_s']:.2f} | {r['clip_s']:.2f} | {r['fps']:.2f} "
                f"| {r['rss_prepared_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['cuda_peak_mb']:.0f} |",
                flush=True,
            )
    if args.memory and len(results) == 2:
        short, long = results
        print(
            f"peak RSS 120 s / 10 s: {long['peak_rss_mb'] / short['peak_rss_mb']:.3f} "
            f"({long['peak_rss_mb'] - short['peak_rss_mb']:+.0f} MB)"
            + (
                f"; CUDA peak {long['cuda_peak_mb'] - short['cuda_peak_mb']:+.0f} MB"
                if short["cuda_peak_mb"]
                else ""
            )
        )


if __name__ == "__main__":
    main()
