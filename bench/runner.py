"""The chunk runner end to end, serial against pipelined: wall time of one whole job, per stage.

A real job through ``worker.runner.ChunkRunner`` (decode, prepare, render, encode, upload, progress,
assembly of the final MP4) on a private redis-server and local storage, with the sample portrait and
speech of ``tests/assets`` (the speech repeated to ``--seconds``). Each mode runs ``--repeats``
times, alternating, and the best wall time is reported, with the stage totals of that run. Stage
times of the pipelined mode overlap, so they add up to more than its wall time.

``non-engine %`` is the share of the wall time not spent in the engine's ``prepare`` and
``render_chunk``: input decoding, encoding and uploads not hidden behind rendering, progress and
checkpoints in Redis, the final assembly (``1 - (prepare + render) / wall``).

Usage:
    python -m bench.runner [--engine warp] [--size 512] [--seconds 20] [--repeats 2]
        [--engine-options '{"num_inference_steps": 25}']
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import cpu_model

ASSETS = Path(__file__).resolve().parents[1] / "tests" / "assets"


class StageTimes:
    """A ``RunnerObserver`` that sums stage seconds (thread-safe enough: one float add per call)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def job_event(self, event_type: str, job: Any) -> None:
        return None

    def chunk_stored(self, job: Any, index: int, start: int, stop: int) -> None:
        return None

    def stage_seconds(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds


def speech_bytes(seconds: float) -> bytes:
    """The sample speech repeated to ``seconds``, as 16 kHz mono WAV bytes."""
    import io
    import wave

    from models.audio import load_audio

    audio = load_audio(ASSETS / "speech.wav")
    audio = np.tile(audio, int(np.ceil(seconds * 16000 / len(audio))))[: int(seconds * 16000)]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def run_job(
    engine: Any,
    redis_url: str,
    root: Path,
    size: int,
    audio: bytes,
    pipelined: bool,
    engine_options: dict[str, Any] | None = None,
) -> dict[str, float]:
    import redis

    from core.jobs import RenderOptions
    from core.jobstore import JobStore
    from core.storage import LocalStorage, job_key
    from worker.runner import ChunkRunner

    jobs = JobStore(redis.Redis.from_url(redis_url))
    storage = LocalStorage(root)
    options = RenderOptions(engine=engine.name, size=size, seed=1, engine_options=engine_options or {})
    job = jobs.create("bench", options)
    storage.put_bytes(job_key(job.id, "inputs", "image"), (ASSETS / "portrait.png").read_bytes())
    storage.put_bytes(job_key(job.id, "inputs", "audio"), audio)
    stages = StageTimes()
    runner = ChunkRunner(engine, jobs, storage, stages, pipelined=pipelined, lease_s=600, heartbeat_s=30)
    started = time.perf_counter()
    status = runner.run(job.id)
    wall = time.perf_counter() - started
    if status is None or status.value != "succeeded":
        raise SystemExit(f"the job ended {status}: {jobs.get(job.id).error}")
    return {"wall": wall, **stages.seconds, "frames": float(jobs.get(job.id).progress.frames_total)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", default="warp")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--engine-options", type=json.loads, default={}, help="the job's engine_options (JSON)"
    )
    args = parser.parse_args()

    from core.localredis import LocalRedis
    from models.registry import build_engine

    engine = build_engine(args.engine, device="cpu")
    engine.warmup()
    audio = speech_bytes(args.seconds)
    best: dict[bool, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="parla-bench-") as tmp:
        server = LocalRedis(Path(tmp) / "redis").start()
        try:
            for repeat in range(args.repeats):
                for pipelined in (False, True):
                    result = run_job(
                        engine,
                        server.url,
                        Path(tmp) / f"s{repeat}{pipelined}",
                        args.size,
                        audio,
                        pipelined,
                        args.engine_options,
                    )
                    if pipelined not in best or result["wall"] < best[pipelined]["wall"]:
                        best[pipelined] = result
        finally:
            server.stop()
    print(
        f"engine {args.engine}, {args.size}x{args.size}, {args.seconds:g} s of audio, best of {args.repeats}"
        + (f", engine_options {json.dumps(args.engine_options)}" if args.engine_options else "")
    )
    print(f"machine: {cpu_model()}")
    print()
    print(
        "| runner | wall s | frames/s | decode s | prepare s | render s | encode s | upload s | non-engine % |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for pipelined in (False, True):
        row = best[pipelined]
        cells = [
            f"{row.get(stage, 0.0):.2f}" for stage in ("decode", "prepare", "render", "encode", "upload")
        ]
        name = "pipelined" if pipelined else "serial"
        non_engine = 100.0 * (1.0 - (row.get("prepare", 0.0) + row.get("render", 0.0)) / row["wall"])
        print(
            f"| {name} | {row['wall']:.2f} | {row['frames'] / row['wall']:.1f} | "
            + " | ".join(cells)
            + f" | {non_engine:.1f} |"
        )
    print()
    print(f"pipelined / serial wall time: {best[True]['wall'] / best[False]['wall']:.2f}")


if __name__ == "__main__":
    main()
