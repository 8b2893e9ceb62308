"""Webhook outbox + dispatcher against a real redis-server and a real HTTP receiver on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from core.localredis import free_port
from core.webhook_outbox import WebhookOutbox
from core.webhooks import parse_secrets
from worker.webhooks import DEFAULT_RETRY_SCHEDULE_S, WebhookDispatcher, parse_retry_after

SECRET = "whsec_" + base64.b64encode(b"parla-test-secret-0123456789ab").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"an-older-secret-being-rotated!").decode()
JOB = {"id": "job_1", "status": "succeeded", "result": {"frames": 50}}


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class CountingServer(ThreadingHTTPServer):
    """Counts accepted TCP connections, so a test can tell "refused" from "sent nothing"."""

    connections = 0

    def get_request(self) -> tuple[Any, Any]:
        accepted = super().get_request()
        self.connections += 1
        return accepted


class Receiver:
    """A webhook endpoint: replies from a per-path script (then 200) and records every request."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripts: dict[str, list[Reply]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    script = receiver.scripts.get(self.path, [])
                    reply = script.pop(0) if script else Reply()
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = CountingServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server.server_address[1]}{path}"

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [request for request in self.requests if request.path == path]


pytestmark = pytest.mark.usefixtures("outside_attempts")  # tests/conftest.py: loopback only


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    instance = Receiver()
    instance.thread.start()
    yield instance
    instance.server.shutdown()
    instance.server.server_close()


@pytest.fixture()
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def independently_verified(request: Received, secret: str = SECRET) -> bool:
    """Standard Webhooks verification written from the spec, sharing no code with core.webhooks."""
    key = base64.b64decode(secret[len("whsec_") :])
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    )
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    fresh = abs(time.time() - int(request.headers["webhook-timestamp"])) < 300
    return fresh and any(
        hmac.compare_digest(expected, sig) for sig in request.headers["webhook-signature"].split()
    )


def make_dispatcher(outbox: WebhookOutbox, **overrides: Any) -> WebhookDispatcher:
    options: dict[str, Any] = {
        "timeout_s": 1.0,  # generous: the machine is shared, only the deliberate stall may time out
        "retry_schedule_s": (0.01, 0.01, 0.01),
        "jitter": 0.0,
        "allow_private_networks": True,  # the receiver is on loopback
    }
    options.update(overrides)
    return WebhookDispatcher(outbox, parse_secrets(f"{SECRET},{OLD_SECRET}"), **options)


def test_terminal_event_survives_500_and_timeout_with_the_same_id(
    client: redis.Redis, receiver: Receiver
) -> None:
    receiver.scripts["/hook"] = [Reply(500), Reply(200, delay_s=3.0)]
    outbox = WebhookOutbox(client)
    outcomes: list[str] = []
    delivery_id = outbox.enqueue("job_1", "video.succeeded", receiver.url("/hook"), JOB, terminal=True)
    assert delivery_id is not None and delivery_id.startswith("msg_")
    assert outbox.deliveries("job_1")[0]["state"] == "pending"  # recorded before any attempt
    with make_dispatcher(outbox, on_outcome=outcomes.append) as dispatcher:
        start = time.time()
        assert dispatcher.deliver_due(now=start) == 1
        assert outbox.deliveries("job_1")[0]["last_status"] == 500
        assert dispatcher.deliver_due(now=start + 1) == 1
        assert outbox.deliveries("job_1")[0]["last_status"] == "timeout"
        assert dispatcher.deliver_due(now=start + 2) == 1
        assert dispatcher.deliver_due(now=start + 3600) == 0
    requests = receiver.to("/hook")
    assert len(requests) == 3
    assert {request.headers["webhook-id"] for request in requests} == {delivery_id}
    assert all(independently_verified(request) for request in requests)
    assert all(independently_verified(request, OLD_SECRET) for request in requests)
    assert len({request.body for request in requests}) == 1
    envelope = json.loads(requests[0].body)
    assert envelope["type"] == "video.succeeded" and envelope["data"] == JOB
    [entry] = outbox.deliveries("job_1")
    assert entry["id"] == delivery_id and entry["type"] == "video.succeeded"
    assert (entry["state"], entry["attempts"], entry["last_status"], entry["next_attempt_at"]) == (
        "delivered",
        3,
        200,
        None,
    )
    assert entry["created_at"].endswith("Z")
    assert outcomes == ["retrying", "retrying", "delivered"]


def test_410_drops_the_delivery_and_later_events_to_that_url(client: redis.Redis, receiver: Receiver) -> None:
    receiver.scripts["/gone"] = [Reply(410)]
    outbox = WebhookOutbox(client)
    outbox.enqueue("job_1", "video.started", receiver.url("/gone"), JOB, terminal=True)
    with make_dispatcher(outbox) as dispatcher:
        now = time.time()
        assert dispatcher.deliver_due(now=now) == 1
        assert dispatcher.deliver_due(now=now + 100) == 0
        outbox.enqueue("job_1", "video.failed", receiver.url("/gone"), JOB, terminal=True)
        assert dispatcher.deliver_due(now=now + 200) == 1
    assert len(receiver.to("/gone")) == 1
    started, failed = outbox.deliveries("job_1")
    assert (started["state"], started["attempts"], started["last_status"]) == ("dropped", 1, 410)
    assert (failed["state"], failed["attempts"], failed["last_status"]) == ("dropped", 0, "gone_before_send")


def test_retry_after_seconds_and_http_date_are_honoured(client: redis.Redis, receiver: Receiver) -> None:
    receiver.scripts["/busy"] = [Reply(503, {"Retry-After": "120"})]
    receiver.scripts["/date"] = [Reply(429, {"Retry-After": formatdate(time.time() + 600, usegmt=True)})]
    outbox = WebhookOutbox(client)
    busy = outbox.enqueue("job_1", "video.succeeded", receiver.url("/busy"), JOB, terminal=True)
    dated = outbox.enqueue("job_2", "video.succeeded", receiver.url("/date"), JOB, terminal=True)
    assert busy is not None and dated is not None
    with make_dispatcher(outbox) as dispatcher:
        now = time.time()
        assert dispatcher.deliver_due(now=now) == 2
        busy_next = outbox.get(busy).next_attempt_at  # type: ignore[union-attr]
        dated_next = outbox.get(dated).next_attempt_at  # type: ignore[union-attr]
        assert busy_next is not None and busy_next >= now + 120
        assert dated_next is not None and now + 590 <= dated_next <= now + 610
        assert dispatcher.deliver_due(now=now + 60) == 0
        assert dispatcher.deliver_due(now=now + 121) == 1
        assert dispatcher.deliver_due(now=now + 601) == 1
    assert len(receiver.to("/busy")) == 2 and len(receiver.to("/date")) == 2


def test_a_short_retry_after_does_not_shorten_the_schedule(client: redis.Redis, receiver: Receiver) -> None:
    receiver.scripts["/soon"] = [Reply(503, {"Retry-After": "1"})]
    outbox = WebhookOutbox(client)
    delivery_id = outbox.enqueue("job_1", "video.failed", receiver.url("/soon"), JOB, terminal=True)
    with make_dispatcher(outbox, retry_schedule_s=(100.0,), jitter=0.1) as dispatcher:
        now = time.time()
        dispatcher.deliver_due(now=now)
    next_at = outbox.get(delivery_id).next_attempt_at  # type: ignore[arg-type, union-attr]
    assert next_at is not None and now + 90 <= next_at <= now + 110


def test_redirects_are_failed_attempts_and_never_followed(client: redis.Redis, receiver: Receiver) -> None:
    receiver.scripts["/moved"] = [Reply(302, {"Location": receiver.url("/target")})]
    outbox = WebhookOutbox(client)
    outbox.enqueue("job_1", "video.succeeded", receiver.url("/moved"), JOB, terminal=True)
    with make_dispatcher(outbox) as dispatcher:
        assert dispatcher.deliver_due() == 1
    assert receiver.to("/target") == []
    [entry] = outbox.deliveries("job_1")
    assert (entry["state"], entry["last_status"]) == ("pending", 302)


def test_progress_is_throttled_and_never_retried(client: redis.Redis, receiver: Receiver) -> None:
    receiver.scripts["/progress"] = [Reply(500)]
    outbox = WebhookOutbox(client, progress_min_interval_s=0.3)
    first = outbox.enqueue("job_1", "video.progress", receiver.url("/progress"), JOB, terminal=False)
    assert first is not None
    assert outbox.enqueue("job_1", "video.progress", receiver.url("/progress"), JOB, terminal=False) is None
    other_job = outbox.enqueue("job_2", "video.progress", receiver.url("/progress"), JOB, terminal=False)
    assert other_job is not None
    # One at a time, so that job_1 (due first) is the one that gets the scripted 500.
    with make_dispatcher(outbox, max_concurrency=1) as dispatcher:
        now = time.time()
        assert dispatcher.deliver_due(now=now) == 2
        assert dispatcher.deliver_due(now=now + 3600) == 0
    failed = outbox.get(first)
    assert failed is not None and (failed.state, failed.attempts, failed.last_status) == ("failed", 1, 500)
    assert len(receiver.to("/progress")) == 2
    assert outbox.deliveries("job_1") == []  # progress stays out of the job's delivery log
    time.sleep(0.35)
    assert (
        outbox.enqueue("job_1", "video.progress", receiver.url("/progress"), JOB, terminal=False) is not None
    )


def test_chunk_events_have_their_own_throttle_and_stay_out_of_the_log(
    client: redis.Redis, receiver: Receiver
) -> None:
    outbox = WebhookOutbox(client, progress_min_interval_s=60, chunk_min_interval_s=0.3)
    url = receiver.url("/chunks")
    assert outbox.enqueue("job_1", "video.progress", url, JOB, terminal=False) is not None
    first = outbox.enqueue("job_1", "video.chunk", url, JOB, terminal=False)  # not held back by progress
    assert first is not None
    assert outbox.enqueue("job_1", "video.chunk", url, JOB, terminal=False) is None
    assert outbox.enqueue("job_1", "video.progress", url, JOB, terminal=False) is None
    with make_dispatcher(outbox) as dispatcher:
        assert dispatcher.deliver_due() == 2
    delivered = outbox.get(first)
    assert delivered is not None and (delivered.state, delivered.terminal) == ("delivered", False)
    assert 0 < client.pttl(outbox.delivery_key(first)) <= outbox.progress_ttl_s * 1000
    assert outbox.deliveries("job_1") == []
    time.sleep(0.35)
    assert outbox.enqueue("job_1", "video.chunk", url, JOB, terminal=False) is not None
    with pytest.raises(ValueError, match="chunk_min_interval_s"):
        WebhookOutbox(client, chunk_min_interval_s=-1)


def test_connection_errors_retry_until_the_schedule_is_used_up(client: redis.Redis) -> None:
    outbox = WebhookOutbox(client)
    delivery_id = outbox.enqueue(
        "job_1", "video.failed", f"http://127.0.0.1:{free_port()}/x", JOB, terminal=True
    )
    outcomes: list[str] = []
    with make_dispatcher(outbox, retry_schedule_s=(0.01,), on_outcome=outcomes.append) as dispatcher:
        now = time.time()
        assert dispatcher.deliver_due(now=now) == 1
        assert dispatcher.deliver_due(now=now + 1) == 1
        assert dispatcher.deliver_due(now=now + 2) == 0
    delivery = outbox.get(delivery_id)  # type: ignore[arg-type]
    assert delivery is not None and delivery.state == "failed" and delivery.attempts == 2
    assert isinstance(delivery.last_status, str) and delivery.last_status.startswith("connection_error")
    assert outcomes == ["retrying", "failed"]


def test_claims_are_disjoint_and_a_lease_expires(client: redis.Redis, redis_url: str) -> None:
    outbox = WebhookOutbox(client)
    ids = {
        outbox.enqueue(f"job_{i}", "video.succeeded", "http://127.0.0.1:9/x", JOB, terminal=True)
        for i in range(6)
    }
    other = WebhookOutbox(redis.Redis.from_url(redis_url))
    now = time.time()
    _, first = outbox.claim_due(now=now, limit=4, lease_s=30)
    _, second = other.claim_due(now=now, limit=4, lease_s=30)
    assert len(first) == 4 and len(second) == 2 and set(first) | set(second) == ids
    assert other.claim_due(now=now + 29)[1] == []
    # A claim made with a stale `now` still leases from the present.
    past = WebhookOutbox(client, clock=lambda: now - 1000)
    late = past.enqueue("job_late", "video.failed", "http://127.0.0.1:9/x", JOB, terminal=True)
    assert outbox.claim_due(now=now - 999, lease_s=30)[1] == [late]
    assert other.claim_due(now=time.time() + 1, lease_s=30)[1] == []
    assert set(other.claim_due(now=time.time() + 31, limit=10)[1]) == ids | {late}


def test_two_dispatchers_never_send_the_same_attempt(
    client: redis.Redis, redis_url: str, receiver: Receiver
) -> None:
    receiver.scripts["/slow"] = [Reply(200, delay_s=0.05) for _ in range(12)]
    outbox = WebhookOutbox(client)
    for i in range(12):
        outbox.enqueue(f"job_{i}", "video.succeeded", receiver.url("/slow"), JOB, terminal=True)
    first = make_dispatcher(outbox, max_concurrency=3)
    second = make_dispatcher(WebhookOutbox(redis.Redis.from_url(redis_url)), max_concurrency=3)
    barrier = threading.Barrier(2)
    handled: list[int] = []

    def run(dispatcher: WebhookDispatcher) -> None:
        barrier.wait()
        handled.append(dispatcher.deliver_due())

    threads = [threading.Thread(target=run, args=(d,)) for d in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    first.close()
    second.close()
    ids = [request.headers["webhook-id"] for request in receiver.to("/slow")]
    assert sum(handled) == 12 and len(ids) == 12 and len(set(ids)) == 12


def test_a_killed_dispatcher_leaves_nothing_undelivered(
    client: redis.Redis, redis_url: str, receiver: Receiver
) -> None:
    outbox = WebhookOutbox(client)
    delivery_id = outbox.enqueue("job_1", "video.succeeded", receiver.url("/hook"), JOB, terminal=True)
    # The first dispatcher claims the attempt and dies before sending it.
    now = time.time()
    dead_token, claimed = outbox.claim_due(now=now, lease_s=30)
    assert claimed == [delivery_id]
    fresh_client = redis.Redis.from_url(redis_url, decode_responses=True)  # either client mode works
    with make_dispatcher(WebhookOutbox(fresh_client), lease_s=30) as survivor:
        assert survivor.deliver_due(now=now + 1) == 0  # still leased to the dead one
        assert survivor.deliver_due(now=now + 31) == 1
    fresh_client.close()
    [request] = receiver.to("/hook")
    assert request.headers["webhook-id"] == delivery_id and independently_verified(request)
    assert json.loads(request.body)["data"] == JOB
    # The dead dispatcher's late result must not overwrite the recorded delivery.
    assert not outbox.record_attempt(delivery_id, dead_token, state="failed", last_status=500)
    assert outbox.deliveries("job_1")[0]["state"] == "delivered"


def test_background_thread_delivers_without_blocking(client: redis.Redis, receiver: Receiver) -> None:
    outbox = WebhookOutbox(client)
    dispatcher = make_dispatcher(outbox, poll_interval_s=5.0)
    thread = dispatcher.run_in_thread()
    assert dispatcher.run_in_thread() is thread
    outbox.enqueue("job_1", "video.canceled", receiver.url("/bg"), JOB, terminal=True)
    dispatcher.notify()
    deadline = time.monotonic() + 5
    while not receiver.to("/bg") and time.monotonic() < deadline:
        time.sleep(0.02)
    dispatcher.stop(timeout_s=5)
    assert not thread.is_alive()
    assert len(receiver.to("/bg")) == 1


def test_parse_retry_after() -> None:
    assert parse_retry_after("30", now=0) == 30
    assert parse_retry_after(None, now=0) is None
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(formatdate(1_000_100, usegmt=True), now=1_000_000) == pytest.approx(100)
    assert parse_retry_after(formatdate(1_000_000, usegmt=True), now=1_000_100) == 0


def test_default_schedule_spans_hours_and_constructor_checks(client: redis.Redis) -> None:
    assert sum(DEFAULT_RETRY_SCHEDULE_S) > 15 * 3600
    assert list(DEFAULT_RETRY_SCHEDULE_S) == sorted(DEFAULT_RETRY_SCHEDULE_S)
    outbox = WebhookOutbox(client)
    with pytest.raises(ValueError, match="lease_s"):
        make_dispatcher(outbox, timeout_s=10, lease_s=5)
    with pytest.raises(ValueError, match="retry_schedule_s"):
        make_dispatcher(outbox, retry_schedule_s=(1.0, 0.0))
    with pytest.raises(ValueError, match="secret"):
        WebhookDispatcher(outbox, [])


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "127.1", "2130706433", "0x7f000001", "[::ffff:127.0.0.1]", "0.0.0.0"]
)
def test_non_global_addresses_are_not_contacted_by_default(
    client: redis.Redis, receiver: Receiver, host: str
) -> None:
    outbox = WebhookOutbox(client)
    url = receiver.url("/internal", host=host)
    delivery_id = outbox.enqueue("job_1", "video.succeeded", url, JOB, terminal=True)
    outcomes: list[str] = []
    with make_dispatcher(outbox, allow_private_networks=False, on_outcome=outcomes.append) as dispatcher:
        assert dispatcher.deliver_due() == 1
        assert dispatcher.deliver_due(now=time.time() + 3600) == 0  # not retried
    assert receiver.to("/internal") == [] and receiver.server.connections == 0
    delivery = outbox.get(delivery_id)  # type: ignore[arg-type]
    assert delivery is not None and (delivery.state, delivery.last_status) == ("failed", "blocked_address")
    assert outcomes == ["failed"]


def test_metadata_and_private_addresses_off_the_host_are_blocked(client: redis.Redis) -> None:
    outbox = WebhookOutbox(client)
    urls = ["http://169.254.169.254/latest/meta-data/", "https://10.1.2.3/x", "https://[fd00::1]/x"]
    ids = [outbox.enqueue(f"job_{i}", "video.failed", url, JOB, terminal=True) for i, url in enumerate(urls)]
    with make_dispatcher(outbox, allow_private_networks=False) as dispatcher:
        assert dispatcher.deliver_due() == len(urls)
    for delivery_id in ids:
        delivery = outbox.get(delivery_id)  # type: ignore[arg-type]
        assert delivery is not None and delivery.last_status == "blocked_address"


def test_credentials_in_a_webhook_url_are_never_sent(client: redis.Redis, receiver: Receiver) -> None:
    outbox = WebhookOutbox(client)
    url = receiver.url("/creds", host="user:secret@127.0.0.1")
    delivery_id = outbox.enqueue("job_1", "video.succeeded", url, JOB, terminal=True)
    with make_dispatcher(outbox) as dispatcher:  # private networks allowed: only the URL is wrong
        assert dispatcher.deliver_due() == 1
    assert receiver.server.connections == 0
    delivery = outbox.get(delivery_id)  # type: ignore[arg-type]
    assert delivery is not None and (delivery.state, delivery.last_status) == ("failed", "invalid_url")


def test_allowed_private_deliveries_arrive_through_the_guard(client: redis.Redis, receiver: Receiver) -> None:
    outbox = WebhookOutbox(client)
    outbox.enqueue("job_1", "video.succeeded", receiver.url("/allowed", host="localhost"), JOB, terminal=True)
    with make_dispatcher(outbox, allow_private_networks=True) as dispatcher:
        assert dispatcher.deliver_due() == 1
    [request] = receiver.to("/allowed")
    assert request.headers["host"] == f"localhost:{receiver.server.server_address[1]}"
    assert independently_verified(request)
    assert outbox.deliveries("job_1")[0]["state"] == "delivered"


def test_a_stray_due_id_of_a_finished_delivery_is_not_sent_again(
    client: redis.Redis, receiver: Receiver
) -> None:
    outbox = WebhookOutbox(client)
    delivery_id = outbox.enqueue("job_1", "video.succeeded", receiver.url("/once"), JOB, terminal=True)
    assert delivery_id is not None
    with make_dispatcher(outbox) as dispatcher:
        now = time.time()
        assert dispatcher.deliver_due(now=now) == 1
        client.zadd(outbox.due_key, {delivery_id: now})  # as if a race had left it behind
        assert dispatcher.deliver_due(now=now + 1) == 0
    assert len(receiver.to("/once")) == 1 and outbox.pending_count() == 0
