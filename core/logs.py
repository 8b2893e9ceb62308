"""Logging: one format for every process, with the job a line belongs to.

``job_context(job_id)`` binds a job to the current context (``contextvars``), so every line logged
while the job runs carries ``job=<id>``, from any module; threads started for the job run in a copy
of the context (``in_job_context``). Loggers are named by module (``logging.getLogger(__name__)``).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s [job=%(job_id)s]: %(message)s"
NO_JOB = "-"

_job_id: contextvars.ContextVar[str] = contextvars.ContextVar("parla_job_id", default=NO_JOB)


def current_job_id() -> str:
    """The job bound to this context, or ``"-"``."""
    return _job_id.get()


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Bind ``job_id`` to every log line of this context until the block ends."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


def in_job_context(target: Callable[..., Any]) -> Callable[..., Any]:
    """``target`` to run in another thread with this context's job (threads start with an empty context)."""
    context = contextvars.copy_context()
    return lambda *args, **kwargs: context.run(target, *args, **kwargs)


_base_factory = logging.getLogRecordFactory()


def _record_with_job_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.job_id = _job_id.get()
    return record


def install_job_ids() -> None:
    """Every log record gets ``job_id`` (this context's job, or ``"-"``), for every handler."""
    if logging.getLogRecordFactory() is not _record_with_job_id:
        logging.setLogRecordFactory(_record_with_job_id)


def configure_logging(level: str | int = "INFO") -> None:
    """The process's logging: ``FORMAT`` on stderr, the job id on every line."""
    install_job_ids()
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, format=FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)
