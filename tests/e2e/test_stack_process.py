"""``service.stack``: a failed start says why and leaves no process behind; SIGTERM stops every child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.localredis import free_port
from service.stack import REPO_ROOT, Stack

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


def started_here(pid: int, state_dir: Path) -> bool:
    """Whether ``pid`` still is a process of this test's stack (not a reused pid)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except (FileNotFoundError, PermissionError):
        return False
    return str(state_dir).encode() in environ or cwd.startswith(str(state_dir))


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PARLA_")}
    return {**env, "PARLA_AUTH_DISABLED": "true", "PARLA_FACE_CHECK": "false", **extra}


def test_failed_start_reports_the_childs_error_and_stops_everything(tmp_path: Path) -> None:
    # The API starts; the worker stops at boot on a constructor argument its engine does not take.
    env = clean_env(PARLA_ENGINE="test", PARLA_ENGINE_CONFIG='{"colour": "red"}')
    stack = Stack(env, state_dir=tmp_path)  # embedded Redis too
    with pytest.raises(RuntimeError) as failure:
        stack.start(timeout_s=90)
    message = str(failure.value)
    assert "worker-0 exited" in message and "does not take colour" in message, message
    assert "see " not in message  # the error itself, not a pointer to a directory
    assert len(stack.started_pids) == 3  # redis-server, API, worker
    assert not [pid for pid in stack.started_pids if alive(pid)]
    assert stack.api is None and stack.workers == [] and stack.redis is None


def test_start_that_never_gets_ready_times_out_with_the_reason_and_stops_everything(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: storage never answers
    env = clean_env(
        PARLA_ENGINE="test",
        PARLA_STORAGE="s3",
        PARLA_S3_ENDPOINT_URL=closed,
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        PARLA_S3_REGION="us-east-1",
    )
    stack = Stack(env, workers=0, state_dir=tmp_path)
    with pytest.raises(TimeoutError) as failure:
        stack.start(timeout_s=20)
    message = str(failure.value)
    assert "StorageError" in message and "last lines of" in message, message
    assert len(stack.started_pids) == 2 and not [pid for pid in stack.started_pids if alive(pid)]


def test_sigterm_to_stack_run_stops_every_child(tmp_path: Path) -> None:
    env = clean_env(PARLA_ENGINE="test", PARLA_PORT=str(free_port()), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.stack", "--state-dir", str(tmp_path), "run"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: set[int] = set()
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        while not any("Parla is up" in line for line in lines):
            line = process.stdout.readline()
            assert line or process.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        children = descendants(process.pid)
        assert len(children) >= 3, children  # redis-server, API, worker (and their helpers)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
        leftover = {pid for pid in children if alive(pid)}
        assert not leftover, leftover
    finally:  # a failed run must not leave its processes behind either
        if process.poll() is None:
            children |= descendants(process.pid)
            process.kill()
            process.wait()
        for pid in children:
            if alive(pid) and started_here(pid, tmp_path):
                os.kill(pid, signal.SIGKILL)
