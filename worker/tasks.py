"""The job function rq calls. Plain and importable; the runner is installed once at worker boot."""

from __future__ import annotations

from worker.runner import ChunkRunner

_runner: ChunkRunner | None = None


def install_runner(runner: ChunkRunner | None) -> None:
    """Make ``runner`` (engine already loaded) the one ``render_job`` uses in this process."""
    global _runner
    _runner = runner


def render_job(job_id: str) -> str | None:
    if _runner is None:
        raise RuntimeError("no runner installed: start workers with `python -m worker`")
    status = _runner.run(job_id)
    return status.value if status else None
