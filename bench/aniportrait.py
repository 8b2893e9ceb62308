"""AniPortrait engine speed and memory: prepare (A2L included), frames/s of the chunked render, peak memory.

Each case (config, seconds of audio) runs in its own subprocess, so its peak memory is its own.
``tiny`` is ``aniportrait-tiny`` (CPU); ``full`` builds the published architecture on random weights
(wav2vec2-base A2L heads, SD1.5 ReferenceNet + denoiser with motion modules, pose guider, SD VAE,
CLIP ViT-L/14 image encoder) on ``--device``, so it runs without the weights. The portrait is
``tests/assets/portrait.png`` (faces found by MediaPipe; the face geometry is the synthetic
``FixedGeometryAnalyzer``, since MediaPipe's FaceLandmarker bundle is a weight file), the speech
``tests/assets/speech.wav`` tiled to the length. ``--max-chunks`` renders only the first chunks after
``prepare`` of the whole clip, so a 120 s case fits a time box and still shows whether memory is
flat in the audio length (its prepared state holds the whole clip's landmarks).

    python -m bench.aniportrait --config tiny --seconds 10,120 --threads 2
    python -m bench.aniportrait --config full --device cuda --dtype bf16 --seconds 10,120 --max-chunks 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parents[1] / "tests" / "assets"


def full_components(device: str, dtype: Any) -> Any:
    """The published architecture on random weights (no weights read)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from models.aniportrait.checkpoint import build_a2l, build_pose_guider, build_unets
    from models.aniportrait.configs import wav2vec2_base_config
    from models.aniportrait.engine import AniPortraitComponents
    from models.sd.configs import sd15_unet_config
    from models.sd.testing import sd_vae

    torch.manual_seed(0)
    a2l = build_a2l(wav2vec2_base_config(), device=device)
    reference, denoiser = build_unets(sd15_unet_config(), device=device, dtype=dtype)
    clip_config = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=768,
    )
    encoder: Any = CLIPVisionModelWithProjection(clip_config)
    return AniPortraitComponents(
        a2l=a2l,
        pose_guider=build_pose_guider(device=device, dtype=dtype),
        reference_net=reference,
        denoiser=denoiser,
        vae=sd_vae((128, 256, 512, 512), 2, 32, 512).to(device=device, dtype=dtype),
        image_encoder=encoder.to(device=device, dtype=dtype).eval(),
        image_processor=CLIPImageProcessor(),
    )


def measure(args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image

    from models.aniportrait.engine import AniPortraitEngine
    from models.aniportrait.testing import FixedGeometryAnalyzer, tiny_engine
    from models.audio import load_audio
    from models.engine import RenderInputs, make_params
    from models.sd.pipeline import dtype_from_name

    torch.set_num_threads(args.threads)
    image = np.asarray(Image.open(ASSETS / "portrait.png").convert("RGB"))
    audio = load_audio(ASSETS / "speech.wav")
    audio = np.tile(audio, int(np.ceil(seconds * 16000 / len(audio))))[: int(seconds * 16000)]
    if args.config == "tiny":
        engine = tiny_engine()
    else:
        dtype = dtype_from_name(args.dtype, torch.device(args.device))
        engine = AniPortraitEngine(
            device=args.device,
            dtype=args.dtype,
            components=full_components(args.device, dtype),
            geometry_analyzer=FixedGeometryAnalyzer(),
            warmup_size=args.size,
        )
    started = time.perf_counter()
    engine.warmup()
    warmup_s = time.perf_counter() - started
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    params = make_params(engine.options_model, size=args.size, fps=25.0, num_inference_steps=args.steps)
    started = time.perf_counter()
    prepared = engine.prepare(RenderInputs(image=image, audio=audio), params)
    prepare_s = time.perf_counter() - started
    prepare_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    render_start = torch.cuda.memory_allocated() / 2**20 if cuda else current_rss_mib()
    chunks = engine.plan(prepared)[: args.max_chunks or None]
    carry, times = None, []
    for chunk in chunks:
        started = time.perf_counter()
        _, carry = engine.render_chunk(prepared, chunk, carry)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    rendered = sum(chunk.num_frames for chunk in chunks)
    steady = chunks[1:] or chunks
    steady_s = sum(times[1:]) or times[0]
    return {
        "config": args.config,
        "device": args.device,
        "dtype": str(engine.dtype).removeprefix("torch."),
        "size": args.size,
        "steps": args.steps,
        "seconds": seconds,
        "frames": prepared.num_frames,
        "rendered": rendered,
        "chunks": len(chunks),
        "warmup_s": warmup_s,
        "prepare_s": prepare_s,
        "first_chunk_s": times[0],
        "fps": sum(chunk.num_frames for chunk in steady) / steady_s,
        "prepare_peak_mib": prepare_peak,
        "render_start_mib": render_start,
        "render_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_mib(),
    }


def rss_mib() -> float:
    """The process's peak resident set size (``VmHWM``) in MiB."""
    return _status_mib("VmHWM:")


def current_rss_mib() -> float:
    return _status_mib("VmRSS:")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5), so later peaks are the render's own."""
    Path("/proc/self/clear_refs").write_text("5")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (full only)")
    parser.add_argument("--size", type=int, default=None, help="64 (tiny) or 512 (full) by default")
    parser.add_argument("--steps", type=int, default=None, help="2 (tiny) or 25 (full) by default")
    parser.add_argument("--seconds", default="10,120")
    parser.add_argument("--max-chunks", type=int, default=0, help="render only the first chunks (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case-timeout-s", type=float, default=600.0)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = args.size or (64 if args.config == "tiny" else 512)
    args.steps = args.steps or (2 if args.config == "tiny" else 25)
    if args.single:
        print(json.dumps(measure(args, float(args.seconds))))
        return
    header = (
        "| config | device | dtype | size | steps | audio s | frames (rendered) | chunks | warm-up s | "
        "prepare s | first chunk s | frames/s | prepare peak MiB | render start MiB | render peak MiB |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    env = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    for seconds in args.seconds.split(","):
        command = [sys.executable, "-m", "bench.aniportrait", "--single", "--seconds", seconds]
        for flag in ("config", "device", "dtype", "size", "steps", "max_chunks", "threads"):
            value = getattr(args, flag)
            if value is not None:
                command += [f"--{flag.replace('_', '-')}", str(value)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=args.case_timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            lines.append(f"| {args.config} | timed out after {args.case_timeout_s:.0f} s: {seconds} s |")
            continue
        if done.returncode != 0:
            lines.append(f"| {args.config} | failed: {(done.stderr.strip().splitlines() or ['?'])[-1]} |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        lines.append(
            f"| {r['config']} | {r['device']} | {r['dtype']} | {r['size']} | {r['steps']} | {r['seconds']:g} | "
            f"{r['frames']} ({r['rendered']}) | {r['chunks']} | {r['warmup_s']:.2f} | {r['prepare_s']:.2f} | "
            f"{r['first_chunk_s']:.2f} | {r['fps']:.2f} | {r['prepare_peak_mib']:.0f} | {r['render_start_mib']:.0f} | "
            f"{r['render_peak_mib']:.0f} |"
        )
        print(lines[-1], file=sys.stderr)
    table = "\n".join(lines)
    print(table)
    if args.output is not None:
        args.output.write_text(table + "\n")


if __name__ == "__main__":
    main()
