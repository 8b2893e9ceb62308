"""Webhook delivery: send what the outbox holds, sign every attempt, retry terminal events for hours.

Semantics (Standard Webhooks' "deliverability" section):

- 2xx: delivered. 410: the receiver wants no more: dropped, and the job's later events to that URL
  are dropped unsent. Anything else (3xx included: redirects are never followed, non-2xx, timeout,
  connection error): a failed attempt.
- A failed terminal delivery is retried on ``retry_schedule_s`` (attempt ``k+1`` waits
  ``retry_schedule_s[k-1]`` seconds, times a random factor in ``[1 - jitter, 1 + jitter]``), or
  after ``Retry-After`` (seconds or an HTTP date) when the receiver asks for longer. When the
  schedule is used up the delivery is ``failed``.
- A non-terminal delivery (progress) gets one attempt and is never retried.
- Every attempt carries the same ``webhook-id`` and body, with a fresh ``webhook-timestamp`` and
  signature.
- Unless ``allow_private_networks``, a URL whose host resolves to a non-global address (loopback,
  private, link-local such as the cloud metadata service) is not contacted: the delivery fails with
  ``blocked_address`` (server-side request forgery guard, ``core.netguard``; the API only checks
  URL syntax). The name is resolved once, when the connection is opened, and the socket goes to
  the address that was checked, so DNS rebinding cannot slip past the check. A URL with
  credentials in it fails with ``invalid_url``; neither is retried.

``WebhookDispatcher.run_in_thread`` runs the loop in a daemon thread, so rendering never waits on
a receiver; ``enqueue`` (the producer side) is a single Redis transaction.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import urlsplit

import httpx

from core.netguard import BlockedAddress, UnsafeURL, check_url, guarded_client
from core.webhook_outbox import Delivery, WebhookOutbox
from core.webhooks import build_headers

logger = logging.getLogger(__name__)

DEFAULT_RETRY_SCHEDULE_S: Final = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0)
"""Waits before retries 1..9 of a terminal event: about 15.7 hours from the first attempt."""

USER_AGENT: Final = "parla-webhooks/1"
BLOCKED_ADDRESS: Final = "blocked_address"
INVALID_URL: Final = "invalid_url"
WEBHOOK_SCHEMES: Final = frozenset({"http", "https"})
"""Schemes a delivery may use (whether http:// is accepted is decided at submission)."""

WebhookOutcome = str
"""``delivered``, ``retrying``, ``failed`` (gave up) or ``dropped`` (410): the metric label."""


@dataclass(frozen=True)
class AttemptResult:
    """What one HTTP attempt gave: a status code or an error string, and any ``Retry-After``."""

    status: int | str
    retry_after_s: float | None = None


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


class WebhookDispatcher:
    """Delivers due webhooks from a ``WebhookOutbox``; any number may share one Redis.

    Args:
        outbox: where deliveries are stored and claimed.
        secrets: signing keys from ``core.webhooks.parse_secrets`` (first = current).
        http_client_factory: builds the ``httpx.Client`` used for every attempt. The address
            guard lives in the client's transport, so build it with
            ``core.netguard.guarded_client`` (tests pass one with their own CA); redirects are
            refused per request whatever the client says. Default: a guarded client honouring
            ``allow_private_networks``.
        timeout_s: per-attempt timeout (the spec recommends 15 to 30 s).
        retry_schedule_s: waits before each retry of a terminal event; all > 0.
        jitter: fraction of random spread on each wait, in [0, 1).
        lease_s: how long a claimed attempt is held before another dispatcher may take it; must
            exceed ``timeout_s``. Default: ``2 * timeout_s + 10``.
        max_concurrency: attempts in flight at once (also the claim batch size).
        poll_interval_s: how often the background loop looks for due deliveries.
        max_retry_after_s: cap on a receiver's ``Retry-After``.
        allow_private_networks: contact hosts that resolve to loopback/private/link-local
            addresses (tests, or a trusted internal receiver); refused by default. Applies to
            the default client.
        on_outcome: called with ``delivered``/``retrying``/``failed``/``dropped`` after each
            attempt (hook for ``parla_webhook_deliveries_total``).
        clock: unix time source for ``webhook-timestamp`` and scheduling.
        rng: random source for jitter.
    """

    def __init__(
        self,
        outbox: WebhookOutbox,
        secrets: Sequence[bytes],
        *,
        http_client_factory: Callable[[], httpx.Client] | None = None,
        timeout_s: float = 15.0,
        retry_schedule_s: Sequence[float] = DEFAULT_RETRY_SCHEDULE_S,
        jitter: float = 0.2,
        lease_s: float | None = None,
        max_concurrency: int = 8,
        poll_interval_s: float = 0.5,
        max_retry_after_s: float = 24 * 3600.0,
        allow_private_networks: bool = False,
        on_outcome: Callable[[WebhookOutcome], None] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if not secrets:
            raise ValueError("WebhookDispatcher needs at least one signing secret (PARLA_WEBHOOK_SECRET)")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if any(wait <= 0 for wait in retry_schedule_s):
            raise ValueError(f"retry_schedule_s entries must all be > 0, got {list(retry_schedule_s)}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        lease = 2 * timeout_s + 10 if lease_s is None else lease_s
        if lease <= timeout_s:
            raise ValueError(
                f"lease_s ({lease}) must exceed timeout_s ({timeout_s}) or attempts could overlap"
            )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.outbox = outbox
        self.secrets = list(secrets)
        self.timeout_s = timeout_s
        self.retry_schedule_s = tuple(float(wait) for wait in retry_schedule_s)
        self.jitter = jitter
        self.lease_s = lease
        self.max_concurrency = max_concurrency
        self.poll_interval_s = poll_interval_s
        self.max_retry_after_s = max_retry_after_s
        self.allow_private_networks = allow_private_networks
        self.on_outcome = on_outcome
        self.clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._http = (http_client_factory or self._default_client)()
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="parla-webhook")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def _default_client(self) -> httpx.Client:
        return guarded_client(
            allow_private_networks=self.allow_private_networks,
            timeout_s=self.timeout_s,
            headers={"user-agent": USER_AGENT},
        )

    # One pass -----------------------------------------------------------------------------------
    def deliver_due(self, now: float | None = None) -> int:
        """Make one attempt for every delivery due at ``now`` (default: the clock).

        Retries scheduled during this pass are due after ``now``, so a pass always ends.

        Returns:
            How many deliveries were handled (sent, or dropped unsent after a 410).
        """
        moment = self.clock() if now is None else now
        handled = 0
        while True:
            token, ids = self.outbox.claim_due(now=moment, limit=self.max_concurrency, lease_s=self.lease_s)
            if not ids:
                return handled
            futures = [self._pool.submit(self._handle, delivery_id, token, moment) for delivery_id in ids]
            handled += sum(1 for future in futures if future.result())

    def _handle(self, delivery_id: str, token: str, now: float) -> bool:
        delivery = self.outbox.get(delivery_id)
        if delivery is None:
            return False  # expired: the next claim drops the id
        if delivery.state != "pending":
            self.outbox.release_finished(delivery_id)
            return False
        if self.outbox.is_gone(delivery.job_id, delivery.url):
            self.outbox.record_attempt(
                delivery_id,
                token,
                state="dropped",
                last_status="gone_before_send",
                now=now,
                count_attempt=False,
            )
            self._count("dropped")
            return True
        result = self._attempt(delivery)
        self._record(delivery, token, result, now)
        return True

    def _attempt(self, delivery: Delivery) -> AttemptResult:
        try:
            url = check_url(delivery.url, schemes=WEBHOOK_SCHEMES)
        except UnsafeURL as exc:
            logger.warning("webhook %s to %s: %s; not sent", delivery.id, _host(delivery.url), exc)
            return AttemptResult(INVALID_URL)
        headers = build_headers(self.secrets, delivery.id, int(self.clock()), delivery.body)
        try:
            response = self._http.post(
                url,
                content=delivery.body,
                headers=headers,
                timeout=self.timeout_s,
                follow_redirects=False,
            )
        except BlockedAddress as exc:
            logger.warning(
                "webhook %s: %s resolves to the non-global address %s; not sent",
                delivery.id,
                _host(delivery.url),
                exc.address,
            )
            return AttemptResult(BLOCKED_ADDRESS)
        except httpx.TimeoutException:
            return AttemptResult("timeout")
        except httpx.TransportError as exc:
            return AttemptResult(f"connection_error: {type(exc).__name__}")
        except Exception as exc:  # a malformed URL or a bug must not kill the loop
            logger.warning("webhook %s to %s: %s", delivery.id, _host(delivery.url), exc)
            return AttemptResult(f"error: {type(exc).__name__}")
        retry_after = parse_retry_after(response.headers.get("retry-after"), now=self.clock())
        return AttemptResult(response.status_code, retry_after)

    def _record(self, delivery: Delivery, token: str, result: AttemptResult, now: float) -> None:
        status = result.status
        if isinstance(status, int) and 200 <= status < 300:
            self._write(delivery, token, "delivered", status, None, now)
            return
        if status in (BLOCKED_ADDRESS, INVALID_URL):  # a retry would be refused the same way
            self._write(delivery, token, "failed", status, None, now)
            return
        if status == 410:
            self.outbox.mark_gone(delivery.job_id, delivery.url)
            self._write(delivery, token, "dropped", status, None, now)
            return
        wait = self._next_wait(delivery, result)
        # Count the wait from the end of this attempt, not from the start of a long pass.
        base = max(now, self.clock())
        logger.info(
            "webhook %s (%s, job %s) to %s failed with %s; %s",
            delivery.id,
            delivery.type,
            delivery.job_id,
            _host(delivery.url),
            status,
            "giving up" if wait is None else f"retrying in {wait:.1f}s",
        )
        if wait is None:
            self._write(delivery, token, "failed", status, None, now)
        else:
            self._write(delivery, token, "pending", status, base + wait, now)

    def _next_wait(self, delivery: Delivery, result: AttemptResult) -> float | None:
        if not delivery.terminal:
            return None
        retry_index = delivery.attempts  # attempts made before this one = retries already used
        if retry_index >= len(self.retry_schedule_s):
            return None
        wait = self.retry_schedule_s[retry_index] * self._rng.uniform(1 - self.jitter, 1 + self.jitter)
        if result.retry_after_s is not None:
            wait = max(wait, min(result.retry_after_s, self.max_retry_after_s))
        return wait

    def _write(
        self, delivery: Delivery, token: str, state: str, status: int | str, next_at: float | None, now: float
    ) -> None:
        written = self.outbox.record_attempt(
            delivery.id,
            token,
            state=state,  # type: ignore[arg-type]  # one of the four states, set by _record
            last_status=status,
            next_attempt_at=next_at,
            now=now,
        )
        if not written:
            logger.warning("webhook %s: lease lost before the result was recorded", delivery.id)
            return
        self._count("retrying" if state == "pending" else state)

    def _count(self, outcome: WebhookOutcome) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    # Background loop ----------------------------------------------------------------------------
    def run_in_thread(self) -> threading.Thread:
        """Start (once) the daemon thread that calls ``deliver_due`` every ``poll_interval_s``."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="parla-webhook-dispatcher", daemon=True)
        self._thread.start()
        return self._thread

    def notify(self) -> None:
        """Wake the loop now (call after ``enqueue`` so a terminal event leaves without delay)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # Redis down, say: keep the thread alive and try again later
                logger.exception("webhook dispatcher pass failed")
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the loop (after its current pass), then close the HTTP client and thread pool."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.close()

    def close(self) -> None:
        """Release the HTTP client and the thread pool."""
        self._pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> WebhookDispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _host(url: str) -> str:
    # Log the host only: webhook URLs often carry a token in their path, query or userinfo.
    try:
        return urlsplit(url).hostname or "<no host>"
    except ValueError:
        return "<invalid url>"
