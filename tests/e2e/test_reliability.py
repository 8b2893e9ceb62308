"""Faults on the real stack: jobs longer than their lease, kill -9 of a worker, a Redis restart.

Real uvicorn and worker processes, real redis-server; every job outlives its lease several times,
so a dead heartbeat cannot hide behind a short job.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from core.media import probe_video
from core.webhooks import generate_secret
from service.stack import Stack
from tests.e2e.test_stack import stack_env, submit

pytestmark = pytest.mark.e2e

LEASE = {"PARLA_LEASE_S": "2", "PARLA_HEARTBEAT_S": "0.4"}


def poll(client: httpx.Client, job_id: str, condition: Any, timeout_s: float = 120) -> dict[str, Any]:
    """Like ``wait_for``, but tolerant of the API answering 503 while Redis is away."""
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            response = client.get(f"/v1/videos/{job_id}")
            if response.status_code == 200:
                job = response.json()
                if condition(job):
                    return job
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"condition not reached; last state {job}")


def holder_pid(redis_url: str, job_id: str) -> int:
    """The pid of the worker holding the job's lease (worker names are host.pid.suffix)."""
    name = redis.Redis.from_url(redis_url).hget(f"parla:job:{job_id}", "worker")
    assert name
    return int(name.decode().rsplit(".", 2)[1])


def test_long_jobs_render_once_and_a_killed_worker_is_resumed(redis_url: str, tmp_path: Path) -> None:
    options = json.dumps({"chunk_frames": 10, "frame_delay_s": 0.05})
    env = stack_env(redis_url, tmp_path, **LEASE, PARLA_ENGINE_CONFIG=options)
    client_redis = redis.Redis.from_url(redis_url)
    with (
        Stack(env, workers=2, state_dir=tmp_path) as stack,
        httpx.Client(base_url=stack.base_url, timeout=30) as client,
    ):
        # 6 s of audio at 25 fps: 150 frames * 0.05 s = 7.5 s of rendering, almost 4 leases.
        long_id = submit(client, 6.0)
        long_job = poll(client, long_id, lambda j: j["status"] in ("succeeded", "failed"))
        assert long_job["status"] == "succeeded", long_job
        assert long_job["attempts"] == 1
        renders = int(client_redis.hget(f"parla:job:{long_id}", "chunk_renders") or 0)
        assert renders == long_job["progress"]["chunks_total"] == 15

        killed_id = submit(client, 6.0)
        poll(client, killed_id, lambda j: j["progress"]["chunks_done"] >= 4)
        victim = holder_pid(redis_url, killed_id)
        os.kill(victim, signal.SIGKILL)
        job = poll(client, killed_id, lambda j: j["status"] in ("succeeded", "failed"))
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2 and holder_pid(redis_url, killed_id) != victim
        renders = int(client_redis.hget(f"parla:job:{killed_id}", "chunk_renders") or 0)
        assert job["progress"]["chunks_total"] <= renders <= job["progress"]["chunks_total"] + 1
        path = tmp_path / "resumed.mp4"
        path.write_bytes(client.get(f"/v1/videos/{killed_id}/video").content)
        info = probe_video(path)
        assert info.frames == 150 and abs(info.duration_s - 6.0) <= 1 / 25


def test_a_redis_restart_mid_run_loses_no_job_and_no_worker(tmp_path: Path) -> None:
    """Embedded Redis (AOF on) restarted while jobs render: every job succeeds, no worker exits.

    Webhook signing is on, which once made idle workers pick jobs up late (a 5 s socket timeout on
    rq's blocking dequeue): the first job is submitted to workers idle for longer than that.
    """
    options = json.dumps({"chunk_frames": 5, "frame_delay_s": 0.03})
    env = {
        "PARLA_ENGINE": "test",
        "PARLA_AUTH_DISABLED": "true",
        "PARLA_FACE_CHECK": "false",
        "PARLA_ENGINE_CONFIG": options,
        "PARLA_WEBHOOK_SECRET": generate_secret(),
        "PARLA_LEASE_S": "20",
        "PARLA_HEARTBEAT_S": "1",
    }
    with (
        Stack(env, workers=2, state_dir=tmp_path) as stack,
        httpx.Client(base_url=stack.base_url, timeout=30) as client,
    ):
        assert stack.redis is not None
        time.sleep(7)  # idle past redis-py's default 5 s socket timeout
        first = submit(client, 1.0)
        started = poll(client, first, lambda j: j["started_at"] is not None, timeout_s=30)
        created = started["created_at"]
        assert started["status"] in ("running", "succeeded")
        ids = [first] + [submit(client, 3.0) for _ in range(4)]
        poll(client, ids[1], lambda j: j["progress"]["chunks_done"] >= 2)
        stack.redis.stop()
        time.sleep(4)
        stack.redis.start()
        for job_id in ids:
            job = poll(client, job_id, lambda j: j["status"] in ("succeeded", "failed", "canceled"))
            assert job["status"] == "succeeded", job
        assert all(worker.poll() is None for worker in stack.workers)
        first_job = client.get(f"/v1/videos/{first}").json()
        assert _seconds_between(created, first_job["started_at"]) < 3


def _seconds_between(earlier: str, later: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()
