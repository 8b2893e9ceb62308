"""Engine speed and memory: frames/s and peak RSS per engine and output size.

Each (engine, size) runs in its own subprocess so that its peak RSS is its own. The portrait and the
speech are the sample files of ``tests/assets``; rendering is timed chunk by chunk, as the worker
runs it, and ``prepare`` (face analysis, features) is reported separately.

Usage:
    python -m bench.engines [--engines warp,test] [--sizes 256,512] [--seconds 8] [--threads 2]
    python -m bench.engines --engines vexpress --weights-dir /models/vexpress --sizes 512
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
from typing import cast

from bench.machine import cpu_model

ASSETS = Path(__file__).resolve().parents[1] / "tests" / "assets"


def measure(
    engine_name: str, size: int, seconds: float, framing: str, weights_dir: str | None
) -> dict[str, float]:
    """Render ``seconds`` of the sample speech at ``size`` with one engine; return timings."""
    import numpy as np
    from PIL import Image, ImageOps

    from models.audio import load_audio
    from models.engine import Framing, RenderInputs, RenderParams
    from models.registry import build_engine

    image = np.asarray(ImageOps.exif_transpose(Image.open(ASSETS / "portrait.png")).convert("RGB"))
    audio = load_audio(ASSETS / "speech.wav")
    repeats = int(np.ceil(seconds * 16000 / len(audio)))
    audio = np.tile(audio, repeats)[: int(seconds * 16000)]
    options = {"weights_dir": weights_dir} if weights_dir else {}
    engine = build_engine(engine_name, **options)
    engine.warmup()
    started = time.perf_counter()
    prepared = engine.prepare(
        RenderInputs(image=image, audio=audio),
        RenderParams(engine.options_model(), size=size, framing=cast(Framing, framing)),
    )
    prepare_s = time.perf_counter() - started
    carry = None
    started = time.perf_counter()
    for chunk in engine.plan(prepared):
        _, carry = engine.render_chunk(prepared, chunk, carry)
    render_s = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "frames": prepared.num_frames,
        "height": prepared.height,
        "width": prepared.width,
        "prepare_s": prepare_s,
        "fps": prepared.num_frames / render_s,
        "peak_rss_mb": peak_kib / 1024,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="warp")
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--framings", default="crop")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for OpenCV/BLAS/torch")
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("--one", nargs=3, metavar=("ENGINE", "SIZE", "FRAMING"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        import cv2

        cv2.setNumThreads(args.threads)
        engine_name, size, framing = args.one
        result = measure(engine_name, int(size), args.seconds, framing, args.weights_dir)
        print(json.dumps(result))
        return

    env = {
        **os.environ,
        **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores visible, {args.threads} threads; {args.seconds:g} s of speech"
    )
    print(
        f"{'engine':<10} {'framing':<8} {'size':>5} {'output':>10} {'frames':>7} {'prepare s':>10} {'frames/s':>9} {'peak RSS MB':>12}"
    )
    for engine_name in args.engines.split(","):
        for framing in args.framings.split(","):
            for size in args.sizes.split(","):
                command = [sys.executable, "-m", "bench.engines", "--one", engine_name, size, framing]
                command += ["--seconds", str(args.seconds), "--threads", str(args.threads)]
                if args.weights_dir:
                    command += ["--weights-dir", args.weights_dir]
                done = subprocess.run(command, capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
                    print(f"{engine_name:<10} {framing:<8} {size:>5} failed: {reason}")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                output = f"{r['width']}x{r['height']}"
                print(
                    f"{engine_name:<10} {framing:<8} {size:>5} {output:>10} {r['frames']:>7} "
                    f"{r['prepare_s']:>10.2f} {r['fps']:>9.1f} {r['peak_rss_mb']:>12.0f}"
                )


if __name__ == "__main__":
    main()
