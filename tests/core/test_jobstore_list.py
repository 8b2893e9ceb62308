"""``JobStore.list`` with a status filter: newest first, pages that stay correct, bounded work."""

from __future__ import annotations

import pytest
import redis

from core.jobs import JobStatus, RenderOptions
from core.jobstore import JobStore


@pytest.fixture()
def store(redis_url: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), ttl_s=60)


def every_page(store: JobStore, **kwargs: object) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor: str | None = None
    for pages in range(1, 1000):
        jobs, cursor = store.list("t", cursor=cursor, **kwargs)  # type: ignore[arg-type]
        ids += [job.id for job in jobs]
        if cursor is None:
            return ids, pages
    raise AssertionError("the pages never ended")


def test_filtered_pages_hold_exactly_the_matching_jobs(store: JobStore) -> None:
    created = [store.create("t", RenderOptions()).id for _ in range(60)]
    canceled = created[::7]
    for job_id in canceled:
        store.request_cancel(job_id)
    store.start_attempt(created[1])
    newest_first = canceled[::-1]
    ids, pages = every_page(store, status=JobStatus.CANCELED, limit=3)
    assert ids == newest_first and pages == 3  # 9 matches, 3 per page, no empty trailing page
    ids, _ = every_page(store, status=JobStatus.QUEUED, limit=7)
    assert ids == [i for i in created[::-1] if i not in canceled and i != created[1]]
    assert store.list("t", status=JobStatus.RUNNING) == ([store.get(created[1])], None)
    assert store.list("t", status=JobStatus.FAILED) == ([], None)
    assert store.list("other", status=JobStatus.QUEUED) == ([], None)


def test_a_rare_status_is_found_with_bounded_work_per_page(store: JobStore) -> None:
    oldest = store.create("t", RenderOptions()).id
    store.request_cancel(oldest)
    for _ in range(150):
        store.create("t", RenderOptions())
    first, cursor = store.list("t", status=JobStatus.CANCELED, max_scan=50)
    assert first == [] and cursor is not None  # gave up after ~50 entries, says where to go on
    ids, pages = every_page(store, status=JobStatus.CANCELED, max_scan=50)
    assert ids == [oldest] and pages == 4


def test_expired_records_leave_the_index_and_pages_stay_full(store: JobStore) -> None:
    created = [store.create("t", RenderOptions()).id for _ in range(6)]
    store.redis.delete(store._key(created[4]), store._key(created[2]))
    page, cursor = store.list("t", limit=3)
    assert [job.id for job in page] == [created[5], created[3], created[1]] and cursor
    rest, cursor = store.list("t", limit=3, cursor=cursor)
    assert [job.id for job in rest] == [created[0]] and cursor is None
    assert store.redis.zcard(store._index_key("t")) == 4
