"""The ``parla`` command: render, status, list, cancel, download, engines.

The API's address and key come from ``--base-url``/``--api-key`` or ``PARLA_BASE_URL``/``PARLA_API_KEY``.
Exit status: 0 done, 1 the job failed or was canceled, 2 bad usage or the API refused the request.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from parla_client.client import Client
from parla_client.errors import APIError, JobFailed, WaitTimeout
from parla_client.models import Job


def _option_value(text: str) -> Any:
    """``k=v``'s value: JSON when it parses (``0.8``, ``true``, ``[1,2]``), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _engine_options(pairs: Sequence[str]) -> dict[str, Any] | None:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"parla: --option wants KEY=VALUE, got {pair!r}")
        options[key] = _option_value(value)
    return options or None


class ProgressBar:
    """A one-line progress bar with an ETA from the frames rendered since the job started running.

    On a terminal the line is redrawn in place; otherwise (a log, a pipe) one line per change.
    """

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.tty = stream.isatty()
        self.first_seen: tuple[float, int] | None = None

    def eta_s(self, job: Job, now: float) -> float | None:
        done, total = job.progress.frames_done, job.progress.frames_total
        if job.status != "running" or not total:
            return None
        if self.first_seen is None:
            self.first_seen = (now, done)
            return None
        start, start_done = self.first_seen
        if done <= start_done or now <= start:
            return None
        rate = (done - start_done) / (now - start)
        return (total - done) / rate

    def update(self, job: Job) -> None:
        fraction = job.progress.fraction
        filled = round(fraction * self.width)
        eta = self.eta_s(job, time.monotonic())
        eta_text = f" ETA {int(eta) // 60}:{int(eta) % 60:02d}" if eta is not None else ""
        line = (
            f"{job.id} {job.status:<9} [{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%}"
            f" {job.progress.chunks_done}/{job.progress.chunks_total} chunks{eta_text}"
        )
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        if self.tty and job.done:
            self.stream.write("\n")
        self.stream.flush()


def _print_job(job: Job, as_json: bool) -> None:
    if as_json:
        print(json.dumps(job.raw, indent=2))
        return
    progress = job.progress
    print(
        f"{job.id}  {job.status}  {progress.frames_done}/{progress.frames_total} frames  engine {job.params.get('engine')}"
    )
    if job.error:
        print(f"  error: {job.error.code}: {job.error.message}")
    if job.result:
        print(
            f"  video: {job.result.duration_s:.2f} s, {job.result.width}x{job.result.height}, {job.result.bytes} bytes"
        )


def _render(client: Client, args: argparse.Namespace) -> int:
    job = client.submit(
        args.image,
        args.audio,
        driving_video=args.driving_video,
        engine=args.engine,
        engine_options=_engine_options(args.option),
        fps=args.fps,
        size=args.size,
        seed=args.seed,
        framing=args.framing,
        idempotency_key=args.idempotency_key,
    )
    bar = None if args.quiet else ProgressBar(sys.stderr)
    try:
        job = client.wait(job.id, timeout_s=args.timeout, on_progress=bar.update if bar else None)
    except JobFailed as failed:
        print(f"parla: {failed}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        client.cancel(job.id)
        print(f"\nparla: canceled {job.id}", file=sys.stderr)
        return 130
    path = client.download(job.id, args.output)
    print(path)
    return 0


def _run(client: Client, args: argparse.Namespace) -> int:
    if args.command == "render":
        return _render(client, args)
    if args.command == "status":
        job = client.wait(args.id, raise_on_failure=False) if args.wait else client.get(args.id)
        _print_job(job, args.json)
        return 0 if job.status != "failed" else 1
    if args.command == "cancel":
        _print_job(client.cancel(args.id), args.json)
        return 0
    if args.command == "download":
        print(client.download(args.id, args.output))
        return 0
    if args.command == "list":
        page = client.list(limit=args.limit, status=args.status)
        if args.json:
            print(json.dumps([job.raw for job in page.data], indent=2))
        for job in [] if args.json else page.data:
            created = job.created_at.isoformat(timespec="seconds") if job.created_at else "?"
            print(f"{job.id}  {job.status:<9}  {created}  {job.params.get('engine')}")
        return 0
    engines = client.engines()
    if args.json:
        print(json.dumps([engine.raw for engine in engines], indent=2))
        return 0
    for engine in engines:
        mark = " (default)" if engine.default else ""
        print(f"{engine.name}{mark}: {engine.summary}")
        for name, prop in engine.options_schema.get("properties", {}).items():
            print(f"    {name} = {json.dumps(engine.defaults.get(name))}  {prop.get('description', '')}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="parla", description="Talk to a Parla API.")
    root.add_argument("--base-url", help="the API's root (default: $PARLA_BASE_URL or http://127.0.0.1:8000)")
    root.add_argument("--api-key", help="bearer key (default: $PARLA_API_KEY)")
    root.add_argument("--json", action="store_true", help="print the API's JSON")
    commands = root.add_subparsers(dest="command", required=True)

    render = commands.add_parser("render", help="render a video and download it")
    render.add_argument("image", help="portrait: a path or an https:// URL")
    render.add_argument("audio", help="speech: a path or an https:// URL")
    render.add_argument("-o", "--output", default="out.mp4", help="where to write the MP4 (default out.mp4)")
    render.add_argument("--driving-video", help="optional head motion video")
    render.add_argument("--engine", help="engine (default: the deployment's)")
    render.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="an engine option (repeatable)"
    )
    render.add_argument("--fps", type=float)
    render.add_argument("--size", type=int)
    render.add_argument("--seed", type=int)
    render.add_argument("--framing", choices=["crop", "full"])
    render.add_argument("--idempotency-key")
    render.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    render.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    status = commands.add_parser("status", help="a job's status")
    status.add_argument("id")
    status.add_argument("--wait", action="store_true", help="wait until the job ends")
    cancel = commands.add_parser("cancel", help="cancel a job")
    cancel.add_argument("id")
    download = commands.add_parser("download", help="download a finished job's MP4")
    download.add_argument("id")
    download.add_argument("-o", "--output", default="out.mp4")
    listing = commands.add_parser("list", help="your jobs, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "canceled"])
    commands.add_parser("engines", help="the engines served, with their options")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with Client(args.base_url, api_key=args.api_key) as client:
            return _run(client, args)
    except APIError as exc:
        print(f"parla: {exc}", file=sys.stderr)
        return 2
    except WaitTimeout as exc:
        print(f"parla: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"parla: {exc}", file=sys.stderr)
        return 2
