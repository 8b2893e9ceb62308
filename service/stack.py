"""The whole stack on one machine: ``python -m service.stack run`` (``make run``) and ``demo`` (``make demo``).

Starts a private redis-server when ``PARLA_REDIS_URL`` is unset, the API (uvicorn) and workers as
child processes, with local storage unless configured otherwise. The end-to-end tests drive the
same class.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from core.localredis import LocalRedis, free_port
from core.logs import configure_logging

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_IMAGE = REPO_ROOT / "tests" / "assets" / "portrait.png"
SAMPLE_AUDIO = REPO_ROOT / "tests" / "assets" / "speech.wav"
LOG_TAIL_LINES = 40


class Stack:
    """Redis (if needed) + API + ``workers`` worker processes.

    Args:
        env: ``PARLA_*`` settings for every process (on top of this process's environment).
        workers: worker processes to start.
        state_dir: where embedded Redis data, local storage and logs go.
    """

    def __init__(
        self, env: dict[str, str] | None = None, workers: int = 1, state_dir: Path | None = None
    ) -> None:
        self.state_dir = (state_dir or REPO_ROOT / "var").resolve()
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("PARLA_STORAGE_DIR", str(self.state_dir / "storage"))
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), self.env.get("PYTHONPATH")]))
        self.env.setdefault("HF_HUB_OFFLINE", "1")
        self.worker_count = workers
        self.redis: LocalRedis | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_metrics_ports: list[int] = []
        self.log_dir = self.state_dir / "logs"
        # pid -> (name, log file, where this run's lines start in it): logs are appended across runs
        self.logs: dict[int, tuple[str, Path, int]] = {}
        self.started_pids: list[int] = []  # every process this stack started, for callers to check

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['PARLA_PORT']}"

    def _spawn(self, module: str, log_name: str, **env: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{log_name}.log"
        with log_path.open("ab") as log_file:  # the child keeps its own copy of the descriptor
            offset = log_file.tell()
            process = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**self.env, **env},
                cwd=REPO_ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.logs[process.pid] = (log_name, log_path, offset)
        self.started_pids.append(process.pid)
        return process

    def start(self, timeout_s: float = 120.0) -> Stack:
        """Start everything and wait until it is ready; on any failure stop what was started."""
        try:
            if not self.env.get("PARLA_REDIS_URL"):
                self.redis = LocalRedis(self.state_dir / "redis", appendonly=True).start()
                if self.redis.process is not None:
                    self.started_pids.append(self.redis.process.pid)
                self.env["PARLA_REDIS_URL"] = self.redis.url
                log.info("embedded redis-server on %s", self.redis.url)
            self.env.setdefault("PARLA_HOST", "127.0.0.1")
            self.env.setdefault("PARLA_PORT", str(free_port()))
            self.api = self._spawn("service", "api")
            for _ in range(self.worker_count):
                self.start_worker()
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def start_worker(self) -> subprocess.Popen[bytes]:
        """Start one more worker, with its metrics on a free port (``worker_metrics_ports``)."""
        port = free_port()
        worker = self._spawn("worker", f"worker-{len(self.workers)}", PARLA_WORKER_METRICS_PORT=str(port))
        self.workers.append(worker)
        self.worker_metrics_ports.append(port)
        return worker

    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The API and worker processes (the embedded Redis is ``redis``)."""
        return [process for process in [self.api, *self.workers] if process is not None]

    def log_tail(self, process: subprocess.Popen[bytes], lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` this run of ``process`` wrote to its log."""
        name, path, offset = self.logs[process.pid]
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                text = handle.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"({name}: cannot read {path}: {exc})"
        tail = "\n".join(text.rstrip().splitlines()[-lines:])
        return f"--- last lines of {path} ---\n{tail or '(empty)'}"

    def exited_early(self) -> str | None:
        """A report on the first API/worker process that has exited, with its log's tail; or None."""
        for process in self.processes():
            if process.poll() is not None:
                name = self.logs[process.pid][0]
                return f"{name} exited (code {process.returncode})\n{self.log_tail(process)}"
        return None

    def wait_ready(self, timeout_s: float) -> None:
        """Until the API answers /readyz and every worker has registered with rq."""
        import redis
        from rq import Worker

        deadline = time.monotonic() + timeout_s
        connection = redis.Redis.from_url(self.env["PARLA_REDIS_URL"])
        readiness = "no answer"
        try:
            while time.monotonic() < deadline:
                report = self.exited_early()
                if report is not None:
                    raise RuntimeError(f"a stack process exited during start: {report}")
                try:
                    answer = httpx.get(f"{self.base_url}/readyz", timeout=2)
                    ready, readiness = answer.status_code == 200, answer.text
                except httpx.HTTPError as exc:
                    ready, readiness = False, f"{type(exc).__name__}: {exc}"
                # Every started worker must have registered, not only those still alive: a worker
                # that exits between the check above and this count must not pass for ready.
                if ready and len(Worker.all(connection=connection)) >= len(self.workers):
                    report = self.exited_early()
                    if report is not None:
                        raise RuntimeError(f"a stack process exited during start: {report}")
                    return
                time.sleep(0.2)
        finally:
            connection.close()
        tails = "\n".join(self.log_tail(process, 15) for process in self.processes())
        raise TimeoutError(f"the stack was not ready within {timeout_s}s; /readyz: {readiness}\n{tails}")

    def stop(self) -> None:
        """Stop workers and API (SIGTERM, then SIGKILL after 15 s), then the embedded Redis."""
        processes = self.processes()
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.workers.clear()
        self.worker_metrics_ports.clear()
        self.api = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def render_sample(
    base_url: str, out: Path, image: Path, audio: Path, timeout_s: float = 600.0
) -> dict[str, object]:
    """Submit ``image`` + ``audio``, follow progress, download the MP4 to ``out``; returns the job JSON."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        files = {"image": (image.name, image.read_bytes()), "audio": (audio.name, audio.read_bytes())}
        response = client.post("/v1/videos", files=files, data={"seed": "7"})
        response.raise_for_status()
        job: dict[str, object] = response.json()
        print(f"submitted {job['id']}")
        deadline = time.monotonic() + timeout_s
        while job["status"] in ("queued", "running"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job['id']} did not finish within {timeout_s}s")
            time.sleep(0.5)
            job = client.get(f"/v1/videos/{job['id']}").json()
            progress = job["progress"]
            assert isinstance(progress, dict)
            print(f"  {job['status']}: {progress['frames_done']}/{progress['frames_total']} frames", end="\r")
        print()
        if job["status"] != "succeeded":
            raise RuntimeError(f"job ended {job['status']}: {job.get('error')}")
        video = client.get(f"/v1/videos/{job['id']}/video", follow_redirects=True)
        video.raise_for_status()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(video.content)
        return job


def stop_on_signals() -> None:
    """Turn SIGTERM (and SIGINT) into ``SystemExit``, so that ``with Stack(...)`` stops the children.

    Further signals are ignored while the stack stops: a second Ctrl-C must not interrupt the
    shutdown half-way and leave children behind (every wait in ``Stack.stop`` is bounded).
    """

    def handle(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"{signal.Signals(signum).name}: stopping", flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def serve(stack: Stack) -> None:
    """Wait until a child exits (then fail with its log's tail) or a signal stops the stack."""
    print(f"Parla is up: {stack.base_url} (API docs at {stack.base_url}/docs). Ctrl-C stops it.", flush=True)
    while True:
        report = stack.exited_early()
        if report is not None:
            raise SystemExit(f"a stack process exited: {report}")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run Parla on this machine")
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="Redis data, storage, logs (default var/)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the stack and serve until Ctrl-C or SIGTERM")
    demo = sub.add_parser("demo", help="start the stack, render the sample, write the MP4, stop")
    demo.add_argument("--out", type=Path, default=Path("out/demo.mp4"))
    demo.add_argument("--image", type=Path, default=SAMPLE_IMAGE)
    demo.add_argument("--audio", type=Path, default=SAMPLE_AUDIO)
    args = parser.parse_args()
    configure_logging("INFO")
    env = {}
    if not os.environ.get("PARLA_API_KEYS"):
        env["PARLA_AUTH_DISABLED"] = "true"
        log.warning("no PARLA_API_KEYS configured: authentication is DISABLED for this local stack")
    stop_on_signals()
    if args.command == "run":
        env.setdefault("PARLA_PORT", os.environ.get("PARLA_PORT", "8000"))
        with Stack(env, state_dir=args.state_dir) as stack:
            serve(stack)
        return
    with Stack(env, state_dir=args.state_dir) as stack:
        started = time.monotonic()
        job = render_sample(stack.base_url, args.out, args.image, args.audio)
        result = job["result"]
        assert isinstance(result, dict)
        print(
            f"wrote {args.out}: {result['frames']} frames, {result['width']}x{result['height']} at "
            f"{result['fps']} fps, {result['duration_s']:.2f} s, {result['bytes']} bytes "
            f"(rendered in {time.monotonic() - started:.1f} s)"
        )


if __name__ == "__main__":
    main()
