"""LivePortrait renderer speed and memory: frames/s and peak memory by device, dtype, compile and batch.

Full-size networks (the published architecture) with random weights (the cost does not depend on their
values; nothing is downloaded). Each case runs in its own subprocess so that its peak memory is its
own. Timed: the per-frame work of a chunk (`LivePortraitPipeline.animate`: keypoint composition,
stitching, retargeting, warp, decode), after the source features are computed once and after warm-up
at the same shapes. Memory: peak RSS (``VmHWM``, reset after warm-up) on CPU,
``torch.cuda.max_memory_allocated`` on CUDA. The last GPU rows time whole jobs through the engine
(sample portrait, ``framing="crop"``, 512 px), as the worker runs them: the procedural audio source at
25 fps with the best renderer setting, and the full-size Ditto motion model (random weights, bf16,
a stand-in for its ONNX HuBERT) at 30 fps, so the 25 -> 30 fps motion resampling is in the path.

Usage:
    python -m bench.liveportrait                      # CPU table (fp32, batch 1 and 4)
    python -m bench.liveportrait --gpu                # GPU table, under 5 minutes on one GPU (with
                                                      # bench.motion --device cuda: under 8)
    python -m bench.liveportrait --case '{"device": "cpu", "dtype": "fp32", "batch": 1, "frames": 4}'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.machine import cpu_model

ASSETS = Path(__file__).resolve().parents[1] / "tests" / "assets"
CPU_CASES: list[dict[str, Any]] = [{"batch": 1, "frames": 4}, {"batch": 4, "frames": 8}]
GPU_CASES: list[dict[str, Any]] = (
    [
        {"dtype": dtype, "compile": False, "batch": batch, "frames": 256}
        for dtype in ("fp16", "bf16")
        for batch in (1, 8, 32)
    ]
    + [{"dtype": dtype, "compile": True, "batch": 8, "frames": 256} for dtype in ("fp16", "bf16")]
    + [{"dtype": "fp32", "compile": False, "batch": 8, "frames": 128}]
)
GPU_BUDGET_S = 5.0 * 60
MOTION_ENGINE_CASE: dict[str, Any] = {
    "motion_model": "ditto",
    "motion_dtype": "bf16",
    "job_fps": 30.0,
    "seconds": 10.0,
}


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this process (see the module docstring)."""
    import numpy as np
    import torch

    from models.liveportrait.checkpoint import build_modules
    from models.liveportrait.engine import DTYPES
    from models.liveportrait.pipeline import LivePortraitPipeline, RetargetSettings
    from models.liveportrait.procedural import ProceduralAudioSource
    from models.liveportrait.testing import randomize

    device = torch.device(case["device"])
    torch.manual_seed(0)
    modules = randomize(build_modules())
    pipeline = LivePortraitPipeline(
        modules, device=device, dtype=DTYPES[case["dtype"]], compile=bool(case.get("compile", False))
    )
    crop = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
    source = pipeline.prepare_source(crop, np.array([0.3, 0.3], np.float32), 0.05)
    batch, frames = int(case["batch"]), int(case["frames"])
    audio = np.random.default_rng(1).standard_normal(16_000 * (frames // 25 + 2)).astype(np.float32) * 0.1
    motion = ProceduralAudioSource(audio, 16_000, 25.0, frames + batch, 21, seed=0)
    settings = RetargetSettings()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    warm, _ = motion.frames(0, batch, None)
    for _ in range(2 if case.get("compile") else 1):
        pipeline.animate(source, warm, motion.reference, settings, batch_size=batch)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")
    part, _ = motion.frames(0, frames, None)
    started = time.perf_counter()
    images = pipeline.animate(source, part, motion.reference, settings, batch_size=batch)
    sync()
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mib()
    return {**case, "fps": frames / elapsed, "peak_mib": peak, "output": list(images.shape[2:])}


def run_engine_case(case: dict[str, Any]) -> dict[str, Any]:
    """Whole jobs through the engine (prepare + every chunk), to compare with the renderer alone."""
    import numpy as np
    import torch
    from PIL import Image

    from models.engine import RenderInputs, RenderParams
    from models.liveportrait.checkpoint import build_modules
    from models.liveportrait.engine import LivePortraitEngine
    from models.liveportrait.options import LivePortraitOptions
    from models.liveportrait.testing import randomize

    torch.manual_seed(0)
    motion_model = case.get("motion_model")
    generator = None
    if motion_model:  # full-size random motion model (bench.motion.build), in the case's motion dtype
        from bench.motion import build

        generator = build(motion_model, "full", case["device"], case.get("motion_dtype", "fp32"), None)
    engine = LivePortraitEngine(
        device=case["device"],
        dtype=case["dtype"],
        modules=randomize(build_modules()),
        batch_size=int(case["batch"]),
        compile=bool(case.get("compile", False)),
        motion_models=[motion_model] if motion_model else None,
        motion_generator=generator,
    )
    engine.warmup()
    image = np.asarray(Image.open(ASSETS / "portrait.png").convert("RGB"))
    seconds = float(case["seconds"])
    audio = (np.random.default_rng(0).standard_normal(int(16_000 * seconds)) * 0.1).astype(np.float32)
    inputs = RenderInputs(image=image, audio=audio)
    options = LivePortraitOptions.model_validate({"motion_model": motion_model} if motion_model else {})
    params = RenderParams(options, size=512, fps=float(case.get("job_fps", 25.0)))
    started = time.perf_counter()
    prepared = engine.prepare(inputs, params)
    prepare_s = time.perf_counter() - started
    carry = None
    for chunk in engine.plan(prepared):
        _, carry = engine.render_chunk(prepared, chunk, carry)
    total = time.perf_counter() - started
    return {
        **case,
        "fps_job": prepared.fps,
        "fps": prepared.num_frames / total,
        "prepare_s": prepare_s,
        "frames": prepared.num_frames,
    }


def _subprocess(case: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
    flag = "--engine-case" if "seconds" in case else "--case"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.liveportrait", flag, json.dumps(case)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        print(f"  timed out: {case}", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(f"  failed: {case}\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["device  dtype  compiled  batch  frames  output    frames/s  peak MiB"]
    for row in rows:
        output = "x".join(str(v) for v in row.get("output", [512, 512]))
        lines.append(
            f"{row['device']:6s}  {row['dtype']:5s}  {bool(row.get('compile'))!s:8s}  {row['batch']:5d}  "
            f"{row['frames']:6d}  {output:8s}  {row['fps']:8.2f}  {row.get('peak_mib', float('nan')):8.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="the GPU table (cuda) instead of the CPU table")
    parser.add_argument("--case", help="run one renderer case (JSON) in this process and print its result")
    parser.add_argument("--engine-case", help="run one whole-engine case (JSON) in this process")
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    if args.engine_case:
        print(json.dumps(run_engine_case(json.loads(args.engine_case))))
        return
    started = time.monotonic()
    rows = []
    if args.gpu:
        import torch

        print(f"GPU: {torch.cuda.get_device_name(0)}; renderer only, random full-size weights")
        for case in GPU_CASES:
            left = GPU_BUDGET_S - (time.monotonic() - started)
            if left < 30:
                print(f"  skipped (time budget): {case}", file=sys.stderr)
                continue
            result = _subprocess({"device": "cuda", **case}, timeout_s=min(left, 120))
            if result:
                rows.append(result)
                print(format_table([result]).splitlines()[1], flush=True)
        print(format_table(rows))
        best = max(rows, key=lambda row: row["fps"]) if rows else None
        left = GPU_BUDGET_S - (time.monotonic() - started)
        engine_cases = [{"seconds": 20.0}, MOTION_ENGINE_CASE]
        for extra in engine_cases if best else []:
            left = GPU_BUDGET_S - (time.monotonic() - started)
            if left < 40:
                print(f"  skipped (time budget): engine {extra}", file=sys.stderr)
                continue
            engine_case = {key: best[key] for key in ("dtype", "compile", "batch")} if best else {}
            result = _subprocess({"device": "cuda", **engine_case, **extra}, timeout_s=left)
            if result:
                source = (
                    f"{result['motion_model']} ({result['motion_dtype']})"
                    if result.get("motion_model")
                    else "procedural"
                )
                print(
                    f"engine end to end ({result['dtype']}, compiled={result['compile']}, batch {result['batch']}, "
                    f"{source}, {result.get('fps_job', 25.0):g} fps): {result['frames']} frames, "
                    f"{result['fps']:.1f} frames/s, prepare {result['prepare_s']:.2f} s"
                )
    else:
        print(f"CPU: {cpu_model()}; renderer only, random full-size weights, fp32")
        for cpu_case in CPU_CASES:
            result = _subprocess({"device": "cpu", "dtype": "fp32", **cpu_case}, timeout_s=900)
            if result:
                rows.append(result)
        print(format_table(rows))
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
