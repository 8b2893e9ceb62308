"""Benchmark the V-Express engine: frames per second and peak memory per audio length.

Every case runs in its own process, so that its peak memory (``VmHWM`` of ``/proc/self/status`` on
CPU, ``torch.cuda.max_memory_allocated`` on CUDA) is its own. Weights are random unless
``--weights-dir`` is given (then the published checkpoint is loaded); the face is placed by a fixed
keypoint analyzer so that face detection is not timed.

Examples::

    # constant memory for any audio length (tiny modules, CPU)
    python -m bench.pipeline --config tiny --size 64 --steps 2 --seconds 10 120
    # the real architecture at a small resolution on CPU, first 2 chunks only
    python -m bench.pipeline --config full --size 64 --steps 2 --seconds 2 --max-chunks 2
    # GPU, the reference settings
    python -m bench.pipeline --config full --size 512 --steps 25 --seconds 10 120 --device cuda --dtype bf16
    # the same, compiled, with FLOPs per frame and MFU against a 790 TFLOP/s peak
    python -m bench.pipeline --config full --size 512 --steps 25 --seconds 10 --device cuda --compile --flops

Per stage (each timed with a device synchronisation around it, so their sum is a little above the
unsynchronised render time): ``denoise`` (every guided denoiser call and DDIM step), ``decode``
(VAE decode and the host copy), ``encode`` (``core.media.encode_segment`` of each chunk's frames,
as the runner does, when ``--encode``). Upload is not timed here (it is the runner's, against S3).
FLOPs per output frame are counted with ``torch.utils.flop_counter`` on the meta device at the
case's shapes (``bench.pipeline.flops_per_frame``); MFU = FLOPs per frame x frames/s / ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import cpu_model


@dataclass
class CaseResult:
    config: str
    size: int
    steps: int
    device: str
    dtype: str
    continuity: str
    seconds: float
    frames: int
    frames_rendered: int
    chunks_rendered: int
    prepare_s: float
    render_s: float
    frames_per_s: float
    prepare_peak_mib: float
    render_start_mib: float
    render_peak_mib: float
    memory_kind: str
    switches: str = "eager"
    warmup_s: float = float("nan")
    first_chunk_s: float = float("nan")
    steady_frames_per_s: float = float("nan")
    denoise_s: float = 0.0
    decode_s: float = 0.0
    encode_s: float = 0.0
    tflop_per_frame: float = float("nan")
    options: str = ""
    """The extra engine options of the case (``--engine-options``), e.g. a non-square frame."""
    mfu: float = float("nan")


def peak_rss_mib() -> float:
    """The process's peak resident set size (``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5), so later peaks are the render's own."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device)) / 2**20
    return peak_rss_mib()


def reset_peak_memory(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def random_full_components(device: str, dtype: Any) -> Any:
    """Full-size V-Express modules, SD VAE and wav2vec2-base with random weights (nothing downloaded).

    Parameters are allocated empty and filled with N(0, 0.02), much faster than the modules' own
    initialisation at 2.2 billion parameters; the numbers are meaningless, the cost is real.
    """
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from models.sd.configs import sd15_unet_config
    from models.sd.testing import sd_vae
    from models.vexpress.audio import build_feature_extractor
    from models.vexpress.checkpoint import build_modules
    from models.vexpress.pipeline import VExpressComponents

    modules = build_modules(sd15_unet_config(), device="meta", dtype=dtype)
    for _, module in modules.items():
        module.to_empty(device=device)
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.normal_(0.0, 0.02)
            for buffer in module.buffers():
                buffer.normal_(0.0, 0.02)
    vae = sd_vae((128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=512)
    audio_encoder: Any = Wav2Vec2Model(Wav2Vec2Config())  # wav2vec2-base: 12 layers, hidden 768
    return VExpressComponents(
        modules=modules,
        vae=vae.to(device=device, dtype=dtype).eval(),
        audio_encoder=audio_encoder.to(device=device, dtype=dtype).eval(),
        feature_extractor=build_feature_extractor(),
    )


def build_engine(args: argparse.Namespace) -> Any:
    import torch

    from models.sd.pipeline import dtype_from_name
    from models.vexpress.engine import VExpressEngine, load_components
    from models.vexpress.testing import FixedKeypointAnalyzer, tiny_components

    device = torch.device(args.device)
    dtype = dtype_from_name(args.dtype, device)
    if args.weights_dir:
        components = load_components(args.weights_dir, device, dtype)
    elif args.config == "tiny":
        components = tiny_components(seed=0, dtype=dtype)
        for module in (components.vae, components.audio_encoder, *dict(components.modules.items()).values()):
            module.to(device)
    else:
        components = random_full_components(args.device, dtype)
    return VExpressEngine(
        device=args.device,
        dtype=args.dtype,
        components=components,
        face_analyzer=FixedKeypointAnalyzer(),
        compile=args.compile,
        channels_last=args.channels_last,
        cuda_graphs=args.cuda_graphs,
        warmup_size=args.size,
        warmup_context_frames=24,
    )


def flops_per_frame(
    size: int, steps: int, context_frames: int = 24, motion_frames: int = 4, guidance: bool = True
) -> dict[str, float]:
    """FLOPs per output frame of the full-size modules in steady state, counted on the meta device.

    One guided denoiser call on a window of ``context_frames`` (the unconditional half's reference
    and audio attentions skipped, the bank projected once: what the engine runs), times ``steps``,
    divided by the window's new frames; plus one VAE decode of a frame. Nothing is allocated.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models.sd.configs import sd15_unet_config
    from models.sd.testing import sd_vae
    from models.vexpress.checkpoint import build_modules

    modules = build_modules(sd15_unet_config(), device="meta", dtype=torch.float32)
    side = size // 8
    meta: dict[str, Any] = {"device": "meta"}
    with torch.inference_mode():
        bank = modules.reference_net(
            torch.empty(1, 4, side, side, **meta),
            torch.zeros((), dtype=torch.long, **meta),
            torch.empty(1, 1, 768, **meta),
        )
        batch = 2 if guidance else 1
        with FlopCounterMode(display=False) as denoiser:
            modules.denoising_unet(
                torch.empty(batch, 4, context_frames, side, side, **meta),
                torch.tensor(999, **meta),
                torch.empty(context_frames, 5, 768, **meta),
                bank,
                kps_features=torch.empty(1, 320, context_frames, side, side, **meta),
                reference_attention_weight=0.95,
                audio_attention_weight=3.0,
                null_context_samples=batch - 1,
            )
        vae: Any = sd_vae((128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=512)
        vae = vae.to("meta")
        with FlopCounterMode(display=False) as decoder:
            vae.decode(torch.empty(1, 4, side, side, **meta))
    new_frames = context_frames - motion_frames
    denoise = denoiser.get_total_flops() * steps / new_frames
    decode = float(decoder.get_total_flops())
    return {"denoise": denoise, "decode": decode, "total": denoise + decode}


def synthetic_speech(seconds: float) -> np.ndarray:
    """A 180 Hz tone with a 3 Hz syllable envelope, float32 at 16 kHz, built in place (no float64 copies)."""
    t = np.arange(int(seconds * 16000), dtype=np.float32) / np.float32(16000.0)
    envelope = np.sin(np.float32(2 * np.pi * 3) * t)
    envelope += 1.0
    np.multiply(t, np.float32(2 * np.pi * 180), out=t)
    np.sin(t, out=t)
    t *= envelope
    t *= np.float32(0.1)
    return t


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def run_case(args: argparse.Namespace, seconds: float) -> CaseResult:
    """Render one job (or its first ``--max-chunks`` chunks) and measure it, in this process."""
    import torch

    from models.engine import RenderInputs, RenderParams

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = build_engine(args)
    started = time.perf_counter()
    engine.warmup()  # compiles when --compile: boot cost, never in a job
    warmup_s = time.perf_counter() - started
    stages = time_stages(engine)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    audio = synthetic_speech(seconds)
    options = engine.options_model.model_validate(
        {
            "head_motion": "still",
            "num_inference_steps": args.steps,
            "continuity": args.continuity,
            **args.engine_options,
        }
    )
    params = RenderParams(options, fps=args.fps, size=args.size, seed=0)
    cuda = engine.device.type == "cuda"
    reset_peak_memory(engine.device)
    started = time.perf_counter()
    prepared = engine.prepare(RenderInputs(image=image, audio=audio), params)
    if cuda:
        torch.cuda.synchronize(engine.device)
    prepare_s = time.perf_counter() - started
    prepare_peak = peak_memory_mib(engine.device)
    # from here on: the chunks' own peak (models and prepared state included)
    reset_peak_memory(engine.device)
    render_start = float(torch.cuda.memory_allocated(engine.device)) / 2**20 if cuda else current_rss_mib()
    chunks = engine.plan(prepared)
    if args.max_chunks:
        chunks = chunks[: args.max_chunks]
    carry, frames_rendered = None, 0
    chunk_done: list[float] = []
    started = time.perf_counter()
    for chunk in chunks:
        frames, carry = engine.render_chunk(prepared, chunk, carry)
        frames_rendered += len(frames)
        carry = type(carry).from_bytes(carry.to_bytes())  # as the runner stores and reloads it
        if args.encode:
            from core.media import encode_segment

            encode_started = time.perf_counter()
            encode_segment(frames, prepared.fps)
            stages["encode"] += time.perf_counter() - encode_started
        if cuda:
            torch.cuda.synchronize(engine.device)
        chunk_done.append(time.perf_counter() - started)
    render_s = time.perf_counter() - started
    first_chunk_s = chunk_done[0] if chunk_done else float("nan")
    # steady state: after the first chunk (the overlap-average mode denoises the clip there)
    steady_frames = frames_rendered - chunks[0].num_frames if chunks else 0
    steady_s = render_s - first_chunk_s
    steady = steady_frames / steady_s if steady_frames > 0 and steady_s > 0 else float("nan")
    flops = args.tflop_per_frame * 1e12 if args.tflop_per_frame else float("nan")
    render_peak = peak_memory_mib(engine.device)
    kind = "cuda max allocated" if cuda else "peak RSS (VmHWM)"
    return CaseResult(
        config=args.config if not args.weights_dir else "published",
        size=args.size,
        steps=args.steps,
        device=str(engine.device),
        dtype=str(engine.dtype).removeprefix("torch."),
        continuity=options.continuity,
        seconds=seconds,
        frames=prepared.num_frames,
        frames_rendered=frames_rendered,
        chunks_rendered=len(chunks),
        prepare_s=prepare_s,
        render_s=render_s,
        frames_per_s=frames_rendered / render_s if render_s > 0 else float("nan"),
        prepare_peak_mib=prepare_peak,
        render_start_mib=render_start,
        render_peak_mib=render_peak,
        memory_kind=kind,
        switches=switches_label(args),
        warmup_s=warmup_s,
        first_chunk_s=prepare_s + first_chunk_s,
        steady_frames_per_s=steady,
        denoise_s=stages["denoise"],
        decode_s=stages["decode"],
        encode_s=stages["encode"],
        tflop_per_frame=flops / 1e12,
        options=json.dumps(args.engine_options, separators=(",", ":")) if args.engine_options else "",
        mfu=flops * (steady if steady == steady else frames_rendered / render_s) / (args.peak_tflops * 1e12),
    )


def switches_label(args: argparse.Namespace) -> str:
    names = [name for name in ("compile", "channels_last", "cuda_graphs") if getattr(args, name)]
    return "+".join(names) or "eager"


def time_stages(engine: Any) -> dict[str, float]:
    """Wrap the engine's denoiser calls and decodes to add up their (synchronised) wall time."""
    import torch

    stages = {"denoise": 0.0, "decode": 0.0, "encode": 0.0}
    pipeline = engine.pipeline
    cuda = engine.device.type == "cuda"

    def timed(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if cuda:
                torch.cuda.synchronize(engine.device)
            started = time.perf_counter()
            result = function(*args, **kwargs)
            if cuda:
                torch.cuda.synchronize(engine.device)
            stages[name] += time.perf_counter() - started
            return result

        return wrapper

    pipeline.predict_v = timed("denoise", pipeline.predict_v)
    pipeline.decode_latents = timed("decode", pipeline.decode_latents)
    return stages


def format_table(results: list[CaseResult]) -> str:
    header = (
        "| config | size | steps | device | dtype | switches | continuity | audio s | frames (rendered) | chunks "
        "| warm-up s | prepare s | first chunk s | render s | frames/s | steady frames/s | denoise s | decode s "
        "| encode s | TFLOP/frame | MFU | render peak MiB | options |"
    )
    lines = [header, "|" + "---|" * 23]
    for r in results:
        lines.append(
            f"| {r.config} | {r.size} | {r.steps} | {r.device} | {r.dtype} | {r.switches} | {r.continuity} "
            f"| {r.seconds:g} | {r.frames} ({r.frames_rendered}) | {r.chunks_rendered} | {r.warmup_s:.1f} "
            f"| {r.prepare_s:.2f} | {r.first_chunk_s:.2f} | {r.render_s:.2f} | {r.frames_per_s:.2f} "
            f"| {r.steady_frames_per_s:.2f} | {r.denoise_s:.2f} | {r.decode_s:.2f} | {r.encode_s:.2f} "
            f"| {r.tflop_per_frame:.2f} | {r.mfu:.1%} | {r.render_peak_mib:.0f} | {r.options} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=["tiny", "full"], default="tiny")
    parser.add_argument(
        "--weights-dir", default=None, help="load the published weights instead of random ones"
    )
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 120.0])
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype", default=None, help="fp32, fp16 or bf16 (default: fp32 on CPU, bf16 on CUDA)"
    )
    parser.add_argument("--continuity", choices=["motion_frames", "overlap_average"], default="motion_frames")
    parser.add_argument("--max-chunks", type=int, default=0, help="render only the first N chunks (0: all)")
    parser.add_argument(
        "--engine-options",
        type=json.loads,
        default={},
        help='extra job options (JSON), e.g. \'{"width": 384, "height": 512}\'',
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="engine switch: torch.compile at warm-up")
    parser.add_argument("--channels-last", action="store_true", help="engine switch: channels-last weights")
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="engine switch: CUDA graphs (with --compile)"
    )
    parser.add_argument("--encode", action="store_true", help="also time encoding each chunk (libx264)")
    parser.add_argument("--flops", action="store_true", help="count FLOPs per frame (meta device) for MFU")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the device's peak, for MFU")
    parser.add_argument("--tflop-per-frame", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.single:
        print(json.dumps(asdict(run_case(args, args.seconds[0]))))
        return
    results = []
    passthrough = list(argv if argv is not None else sys.argv[1:])
    if args.flops and args.config == "full":
        tflop = flops_per_frame(args.size, args.steps)["total"] / 1e12
        passthrough += ["--tflop-per-frame", str(tflop)]
    for seconds in args.seconds:
        command = [sys.executable, "-m", "bench.pipeline", *_without_seconds(passthrough)]
        command += ["--seconds", str(seconds), "--single"]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            sys.stderr.write(completed.stderr)
            raise SystemExit(f"case {seconds} s failed (exit {completed.returncode})")
        results.append(CaseResult(**json.loads(completed.stdout.strip().splitlines()[-1])))
        print(f"done: {seconds} s of audio", file=sys.stderr)
    print(f"machine: {platform.machine()} {cpu_model()}, python {platform.python_version()}")
    print(f"memory: {results[0].memory_kind}; render peak = highest during the chunks, models included")
    print(format_table(results))


def _without_seconds(argv: list[str]) -> list[str]:
    """``argv`` without the ``--seconds`` option and its values."""
    out, skipping = [], False
    for arg in argv:
        if arg == "--seconds":
            skipping = True
            continue
        if skipping and not arg.startswith("--"):
            continue
        skipping = False
        out.append(arg)
    return out


if __name__ == "__main__":
    main()
