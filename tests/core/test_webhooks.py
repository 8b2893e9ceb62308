"""Standard Webhooks signing: the spec's published vector and an independent re-computation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core import webhooks

# Published by the Standard Webhooks reference libraries (and quoted by the Svix docs).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def independent_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Written from the spec text, not from core.webhooks."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, msg_id.encode() + b"." + str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def test_spec_known_answer_vector() -> None:
    keys = webhooks.parse_secrets(SPEC_SECRET)
    assert webhooks.sign(keys, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signature_matches_independent_implementation_for_other_inputs() -> None:
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    body = webhooks.encode_event({"type": "video.succeeded", "timestamp": "x", "data": {"id": "j1", "é": 1}})
    got = webhooks.sign(webhooks.parse_secrets(secret), "msg_abc", 1_700_000_000, body)
    assert got == independent_signature(secret, "msg_abc", 1_700_000_000, body)


def test_multiple_secrets_give_one_signature_each_in_order() -> None:
    other = "whsec_" + base64.b64encode(b"k" * 24).decode()
    keys = webhooks.parse_secrets(f"{SPEC_SECRET}, {other}")
    assert len(keys) == 2
    parts = webhooks.sign(keys, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY).split(" ")
    assert parts == [SPEC_SIGNATURE, independent_signature(other, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY)]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with"),
        ("whsec_not base64!!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "decodes to 65 bytes"),
    ],
)
def test_bad_secret_is_a_clear_value_error(value: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        webhooks.parse_secrets(f"{SPEC_SECRET},{value}")
    assert "#2" in str(caught.value)
    assert value.removeprefix("whsec_") not in str(caught.value)


def test_empty_setting_means_no_secrets_and_signing_refuses() -> None:
    assert webhooks.parse_secrets("") == []
    assert webhooks.parse_secrets(" , ") == []
    with pytest.raises(ValueError, match="without a secret"):
        webhooks.sign([], "msg_1", 1, b"{}")


def test_message_id_with_a_dot_is_refused() -> None:
    with pytest.raises(ValueError, match="msg_id"):
        webhooks.sign(webhooks.parse_secrets(SPEC_SECRET), "msg.1", 1, b"{}")


def test_build_headers_and_verify_round_trip() -> None:
    keys = webhooks.parse_secrets(SPEC_SECRET)
    headers = webhooks.build_headers(keys, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert headers == {
        "webhook-id": SPEC_MSG_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
        "content-type": "application/json",
    }
    upper = {key.upper(): value for key, value in headers.items()}
    assert webhooks.verify(keys, upper, SPEC_BODY, now=SPEC_TIMESTAMP + 10)
    assert not webhooks.verify(keys, headers, SPEC_BODY + b" ", now=SPEC_TIMESTAMP)
    assert not webhooks.verify(keys, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 301)
    wrong = webhooks.parse_secrets("whsec_" + base64.b64encode(b"w" * 24).decode())
    assert not webhooks.verify(wrong, headers, SPEC_BODY, now=SPEC_TIMESTAMP)


def test_event_envelope_is_deterministic_utc_and_round_trips() -> None:
    moment = datetime(2026, 11, 20, 23, 0, 1, 5, tzinfo=timezone(timedelta(hours=2)))
    data = {"status": "succeeded", "id": "job_1", "progress": {"frames_done": 3}}
    event = webhooks.build_event("video.succeeded", data, occurred_at=moment)
    assert event["timestamp"] == "2026-11-20T21:00:01.000005Z"
    body = webhooks.encode_event(event)
    assert body == webhooks.encode_event(
        webhooks.build_event("video.succeeded", dict(reversed(data.items())), occurred_at=moment)
    )
    assert b" " not in body
    assert json.loads(body) == {
        "type": "video.succeeded",
        "timestamp": "2026-11-20T21:00:01.000005Z",
        "data": data,
    }


def test_event_envelope_refuses_unknown_types_and_naive_times() -> None:
    with pytest.raises(ValueError, match="unknown webhook event"):
        webhooks.build_event("video.exploded", {})
    with pytest.raises(ValueError, match="timezone-aware"):
        webhooks.build_event("video.failed", {}, occurred_at=datetime(2026, 1, 1))
    now_event = webhooks.build_event("video.failed", {})
    parsed = datetime.strptime(now_event["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 60


def test_event_constants() -> None:
    assert webhooks.DEFAULT_WEBHOOK_EVENTS == ("video.succeeded", "video.failed", "video.canceled")
    assert set(webhooks.ALL_WEBHOOK_EVENTS) == {
        "video.started",
        "video.progress",
        "video.chunk",
        "video.succeeded",
        "video.failed",
        "video.canceled",
    }
    assert webhooks.is_terminal_event("video.canceled") and not webhooks.is_terminal_event("video.progress")
    assert not webhooks.is_terminal_event("video.chunk")
    assert webhooks.STREAM_WEBHOOK_EVENTS == ("video.progress", "video.chunk")
    assert webhooks.validate_webhook_events(["video.failed", "video.started", "video.failed"]) == [
        "video.started",
        "video.failed",
    ]
    with pytest.raises(ValueError, match=r"video\.done"):
        webhooks.validate_webhook_events(["video.done"])


def test_generated_secret_parses() -> None:
    assert len(webhooks.parse_secrets(webhooks.generate_secret())[0]) == 32


@pytest.mark.parametrize(
    ("url", "allow_http", "fragment"),
    [
        ("http://example.com/hook", False, "must use https"),
        ("ftp://example.com/hook", True, "must use https or http"),
        ("https:///hook", False, "no host"),
        ("https://user:pw@example.com/hook", False, "credentials"),
        ("https://example.com/hook#x", False, "fragment"),
        ("https://example.com/" + "a" * 2048, False, "longer than"),
    ],
)
def test_bad_webhook_urls_are_refused(url: str, allow_http: bool, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        webhooks.validate_webhook_url(url, allow_http=allow_http)


def test_good_webhook_urls_pass() -> None:
    assert (
        webhooks.validate_webhook_url("https://example.com/hooks?token=abc")
        == "https://example.com/hooks?token=abc"
    )
    assert (
        webhooks.validate_webhook_url("http://127.0.0.1:8080/h", allow_http=True) == "http://127.0.0.1:8080/h"
    )
