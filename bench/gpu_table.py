"""The whole vexpress GPU table in one run (H200: under 8 minutes): bf16 and fp16, eager and
compiled (with channels-last), 10 s and 120 s of audio, 512x512, 25 steps, guidance 3.5, random full-size weights.

Each case is a ``bench.pipeline`` subprocess (its own peak memory, its own warm-up: compiling
happens there, at boot, and is reported as warm-up time). To fit the time box every case renders
its first ``--max-chunks`` chunks (default 4: 20 new frames each after the first's 24), after
``prepare`` of the whole clip (wav2vec2 over all of the audio, so the 120 s case has its full
prepared state in memory): steady-state frames/s is measured over chunks 2.., and peak memory of the
120 s case against the 10 s case shows whether memory is flat in the audio length. Cases are run
in order of importance, under a hard time box (``--budget-s``, default 450 s, so that the script
with its start-up ends within 8 minutes): each case's timeout is what is left of the box, and a
case is not started with less than ``--min-case-s`` left; skipped or timed-out cases are listed.
The last two rows, if time remains, are the reference-compatible behaviours: a non-square frame
(``width=384, height=512``, the whole portrait resized as the V-Express script does; eager, since
the compiled graphs are for the warm-up's square shapes) and ``seed_mode="reference"`` (with the
reference's frame count and schedule, ``overlap_average``: the first chunk denoises the whole clip,
3.3 s of audio = 64 frames). Their MFU is not given (the FLOP count is the square
motion-frames one). Writes a markdown table to stdout and to ``--output``.

    python -m bench.gpu_table --output /tmp/gpu_table.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.pipeline import CaseResult, flops_per_frame, format_table

NON_SQUARE: dict[str, object] = {"width": 384, "height": 512}
REFERENCE_MODE: dict[str, object] = {
    "continuity": "overlap_average",
    "seed_mode": "reference",
    "frame_count": "reference",
}
CASES: list[tuple[str, list[str], float, dict[str, object]]] = [
    # (dtype, switches, seconds of audio, extra engine options), most important first
    ("bf16", [], 10.0, {}),
    ("bf16", ["--compile", "--channels-last"], 10.0, {}),
    ("bf16", ["--compile", "--channels-last"], 120.0, {}),
    ("fp16", [], 10.0, {}),
    ("fp16", ["--compile", "--channels-last"], 10.0, {}),
    ("bf16", [], 120.0, {}),
    ("fp16", ["--compile", "--channels-last"], 120.0, {}),
    ("fp16", [], 120.0, {}),
    ("bf16", [], 10.0, NON_SQUARE),
    ("bf16", [], 3.3, REFERENCE_MODE),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--max-chunks", type=int, default=4)
    parser.add_argument("--budget-s", type=float, default=450.0, help="hard time box of all the cases")
    parser.add_argument("--case-timeout-s", type=float, default=240.0)
    parser.add_argument("--min-case-s", type=float, default=45.0, help="do not start a case with less left")
    parser.add_argument("--peak-tflops", type=float, default=790.0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    tflop = flops_per_frame(args.size, args.steps)["total"] / 1e12
    results: list[CaseResult] = []
    notes: list[str] = []
    for dtype, switches, seconds, options in CASES:
        left = args.budget_s - (time.perf_counter() - started)
        label = (
            f"{dtype} {' '.join(switches) or 'eager'} {seconds:g} s {json.dumps(options) if options else ''}"
        )
        if left < args.min_case_s:
            notes.append(f"skipped (time box): {label}")
            continue
        timeout = min(args.case_timeout_s, left)
        command = [
            sys.executable, "-m", "bench.pipeline", "--config", "full", "--device", "cuda",
            "--dtype", dtype, "--size", str(args.size), "--steps", str(args.steps),
            "--seconds", str(seconds), "--max-chunks", str(args.max_chunks), "--encode",
            "--peak-tflops", str(args.peak_tflops), "--single", *switches,
        ]  # fmt: skip
        if options:
            command += ["--engine-options", json.dumps(options)]
        else:
            command += ["--tflop-per-frame", str(tflop)]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            notes.append(f"timed out after {timeout:.0f} s: {label}")
            continue
        if completed.returncode != 0:
            notes.append(f"failed (exit {completed.returncode}): {label}: {completed.stderr.strip()[-300:]}")
            continue
        results.append(CaseResult(**json.loads(completed.stdout.strip().splitlines()[-1])))
        print(f"done: {label} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    lines = [
        f"size {args.size}, {args.steps} steps, CFG 3.5, context 24 / motion 4, first {args.max_chunks} chunks "
        f"per case; {tflop:.1f} TFLOP per output frame (meta-device count); MFU vs {args.peak_tflops:g} TFLOP/s; "
        f"total {time.perf_counter() - started:.0f} s",
        "",
        format_table(results),
        *(f"- {note}" for note in notes),
    ]
    table = "\n".join(lines)
    print(table)
    if args.output is not None:
        args.output.write_text(table + "\n")


if __name__ == "__main__":
    main()
