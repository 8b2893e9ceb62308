"""Log lines name the job they belong to, on the job's own threads too."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import redis

from core.jobs import JobStatus, RenderOptions
from core.jobstore import JobStore
from core.logs import current_job_id, in_job_context, install_job_ids, job_context
from core.storage import LocalStorage, job_key
from models.testing import PatternEngine
from tests.media import image_bytes, wav_bytes
from worker.runner import ChunkRunner


def test_the_job_is_bound_to_the_context_and_to_threads_started_for_it() -> None:
    seen: dict[str, str] = {}

    def record(name: str) -> None:
        seen[name] = current_job_id()

    with job_context("vid_a"):
        inherited = threading.Thread(target=in_job_context(record), args=("inherited",))
        plain = threading.Thread(target=record, args=("plain",))
        inherited.start(), plain.start()
        inherited.join(), plain.join()
        with job_context("vid_b"):
            record("nested")
        record("after nested")
    record("outside")
    assert seen == {
        "inherited": "vid_a",
        "plain": "-",  # a thread starts with an empty context
        "nested": "vid_b",
        "after nested": "vid_a",
        "outside": "-",
    }


def test_every_line_a_job_logs_names_it_from_every_thread(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install_job_ids()
    jobs = JobStore(redis.Redis.from_url(redis_url))
    storage = LocalStorage(tmp_path)
    job = jobs.create("t", RenderOptions(engine="test", size=64, seed=1))
    storage.put_bytes(job_key(job.id, "inputs", "image"), image_bytes(160, 160))
    storage.put_bytes(job_key(job.id, "inputs", "audio"), wav_bytes(1.0))

    class Chatty(PatternEngine):
        def render_chunk(self, prepared, chunk, carry):  # type: ignore[no-untyped-def]
            logging.getLogger("models.chatty").info("rendering chunk %d", chunk.index)
            return super().render_chunk(prepared, chunk, carry)

    runner = ChunkRunner(Chatty(chunk_frames=8), jobs, storage)
    original = runner.store_chunk

    def store_and_log(*args, **kwargs):  # type: ignore[no-untyped-def]
        logging.getLogger("worker.sink").info("storing")  # on the sink's thread
        return original(*args, **kwargs)

    runner.store_chunk = store_and_log  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO):
        assert runner.run(job.id) == JobStatus.SUCCEEDED
        logging.getLogger("after").info("the job is over")
    by_name = {(record.name, getattr(record, "job_id", None)) for record in caplog.records}
    assert ("models.chatty", job.id) in by_name and ("worker.sink", job.id) in by_name
    assert ("worker.runner", job.id) in by_name and ("after", "-") in by_name
    assert {record.threadName for record in caplog.records if record.name == "worker.sink"} != {"MainThread"}
