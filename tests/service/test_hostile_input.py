"""Hostile JSON and form text through the API: a 4xx with a code, never a 500, never a broken job."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.media import image_bytes, wav_bytes

IMAGE = image_bytes(256, 256)
AUDIO = wav_bytes(1.0)
URLS = {
    "image_url": "data:image/png;base64," + base64.b64encode(IMAGE).decode(),
    "audio_url": "data:audio/wav;base64," + base64.b64encode(AUDIO).decode(),
}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


def post_json(client: TestClient, body: bytes) -> Any:
    return client.post("/v1/videos", content=body, headers={"content-type": "application/json"})


def body_with(**fields: Any) -> bytes:
    return json.dumps({**URLS, **fields}).encode()


def post_form(client: TestClient, **fields: str) -> Any:
    files = {"image": ("p.png", IMAGE, "image/png"), "audio": ("a.wav", AUDIO, "audio/wav")}
    return client.post("/v1/videos", files=files, data=fields)


def assert_refused(client: TestClient, response: Any, code: str, mentions: str = "") -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert mentions in error["message"], error
    listing = client.get("/v1/videos")
    assert listing.status_code == 200 and listing.json()["data"] == []  # nothing was queued


@pytest.mark.parametrize(
    ("body", "code", "mentions"),
    [
        (body_with(metadata=nested(200)), "invalid_request", "deeper than 32"),
        (("[" * 100_000).encode(), "invalid_request", "deeper than 32"),
        (b'{"metadata": ' + b"[" * 100_000, "invalid_request", "deeper than 32"),
        (body_with(metadata=nested(9)), "invalid_params", "metadata is nested deeper than 8"),
        (body_with(metadata=None), "invalid_params", "metadata"),
        (body_with(metadata=[1]), "invalid_params", "metadata"),
        (body_with(metadata="text"), "invalid_params", "metadata"),
        (body_with(metadata={"a": "\ud800"}), "invalid_request", "metadata.a"),
        (body_with(metadata={"\udc00": 1}), "invalid_request", "a key"),
        (body_with(metadata={"a": "x\x00y"}), "invalid_request", "NUL"),
        (body_with(webhook_url="https://example.com/\ud800"), "invalid_request", "webhook_url"),
        (json.dumps({**URLS, "image_url": "data:,\udfff"}).encode(), "invalid_request", "image_url"),
        (body_with(**{"\ud800": 1}), "invalid_request", "a key"),
        (body_with(metadata={"a": float("nan")}), "invalid_request", "NaN"),
        (body_with(metadata={"a": float("inf")}), "invalid_request", "Infinity"),
        (b'{"metadata": {"a": 1e999}}', "invalid_request", "out of range"),
        (b"\xff\xfe{}", "invalid_request", "UTF-8"),
    ],
    ids=[
        "metadata-depth-200",
        "100k-brackets",
        "100k-brackets-in-metadata",
        "metadata-depth-9",
        "metadata-null",
        "metadata-list",
        "metadata-string",
        "surrogate-value",
        "surrogate-key",
        "nul",
        "surrogate-webhook-url",
        "surrogate-image-url",
        "surrogate-top-level-key",
        "nan",
        "infinity",
        "huge-float",
        "not-utf8",
    ],
)
def test_hostile_json_bodies_are_refused(client: TestClient, body: bytes, code: str, mentions: str) -> None:
    assert_refused(client, post_json(client, body), code, mentions)


@pytest.mark.parametrize(
    ("metadata", "code", "mentions"),
    [
        (json.dumps(nested(200)), "invalid_params", "deeper than 8"),
        ("[" * 100_000, "invalid_params", "deeper than 8"),
        (json.dumps(nested(9)), "invalid_params", "deeper than 8"),
        ("null", "invalid_params", "metadata"),
        ('{"a": "\\ud800"}', "invalid_request", "metadata.a"),
        ('{"a": NaN}', "invalid_params", "NaN"),
    ],
    ids=["depth-200", "100k-brackets", "depth-9", "null", "surrogate-escape", "nan"],
)
def test_hostile_multipart_metadata_is_refused(
    client: TestClient, metadata: str, code: str, mentions: str
) -> None:
    assert_refused(client, post_form(client, metadata=metadata), code, mentions)


def test_deep_webhook_events_field_is_refused(client: TestClient) -> None:
    assert_refused(
        client, post_form(client, webhook_events="[" * 100_000), "invalid_params", "webhook_events"
    )


def raw_multipart(fields: list[tuple[bytes, bytes]], charset: str | None = None) -> tuple[bytes, str]:
    boundary = "hostileboundary"
    parts = [
        (b'form-data; name="image"; filename="p.png"', IMAGE),
        (b'form-data; name="audio"; filename="a.wav"', AUDIO),
        *((b'form-data; name="' + name + b'"', value) for name, value in fields),
    ]
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + value + b"\r\n"
        for disposition, value in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    content_type = f"multipart/form-data; boundary={boundary}" + (f"; charset={charset}" if charset else "")
    return body, content_type


@pytest.mark.parametrize(
    ("fields", "charset", "code", "mentions"),
    [
        # utf-7 decodes "+2AA-" to a lone surrogate: in a value, in a field name
        ([(b"webhook_url", b"https://example.com/+2AA-")], "utf-7", "invalid_request", "webhook_url"),
        ([(b"x+2AA-", b"1")], "utf-7", "invalid_request", "field name"),
        ([(b"fps", b"2\x005")], None, "invalid_request", "NUL"),
        # invalid UTF-8 is decoded as latin-1 by the form parser: a wrong value, refused as such
        ([(b"fps", b"\xff\xfe")], None, "invalid_params", "fps"),
    ],
    ids=["utf7-surrogate-value", "utf7-surrogate-name", "nul-value", "invalid-utf8"],
)
def test_broken_form_text_is_refused(
    client: TestClient, fields: list[tuple[bytes, bytes]], charset: str | None, code: str, mentions: str
) -> None:
    body, content_type = raw_multipart(fields, charset)
    response = client.post("/v1/videos", content=body, headers={"content-type": content_type})
    assert_refused(client, response, code, mentions)


def test_accepted_metadata_reads_back_everywhere(client: TestClient) -> None:
    metadata = {"deep": nested(7), "text": "é" * 1500, "emoji": "\U0001f600"}  # 3 KB as UTF-8, 9 KB escaped
    response = post_json(client, body_with(metadata=metadata))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert client.get(f"/v1/videos/{job_id}").json()["metadata"] == metadata
    assert client.get("/v1/videos").json()["data"][0]["metadata"] == metadata
    form = post_form(client, metadata=json.dumps(metadata))
    assert form.status_code == 202 and form.json()["metadata"] == metadata


def test_metadata_size_counts_utf8_bytes_of_the_compact_json(client: TestClient) -> None:
    fits = {"t": "é" * 2040}  # {"t":"..."}: 8 + 4080 = 4088 bytes
    assert post_json(client, body_with(metadata=fits)).status_code == 202
    too_big = {"t": "é" * 2045}  # 4098 bytes
    response = post_json(client, body_with(metadata=too_big))
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_params"
    assert "4098 bytes" in response.json()["error"]["message"]


def test_omitting_metadata_is_fine(client: TestClient) -> None:
    assert post_json(client, body_with()).status_code == 202
    assert post_form(client).json()["metadata"] is None
