from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from core.media import encode_segment
from core.settings import Settings
from tests.media import encoded_audio, image_bytes, png_header, wav_bytes

IMAGE = image_bytes(256, 256)
AUDIO = wav_bytes(1.0)


def submit(
    client: TestClient, image: bytes = IMAGE, audio: bytes = AUDIO, headers: Any = None, **fields: Any
) -> Any:
    files = {"image": ("portrait.png", image, "image/png"), "audio": ("speech.wav", audio, "audio/wav")}
    return client.post(
        "/v1/videos", files=files, data={k: str(v) for k, v in fields.items()}, headers=headers
    )


def test_submit_multipart_returns_202_location_and_job(client: TestClient) -> None:
    response = submit(client, fps=30, size=128, seed=5, metadata=json.dumps({"user": "u1"}))
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/videos/{job['id']}"
    assert job["status"] == "queued" and job["params"]["fps"] == 30 and job["params"]["seed"] == 5
    assert job["params"]["engine"] == "test" and job["metadata"] == {"user": "u1"}
    fetched = client.get(f"/v1/videos/{job['id']}").json()
    assert fetched["id"] == job["id"] and fetched["progress"]["chunks_done"] == 0


def test_seed_is_chosen_and_recorded_when_unset(client: TestClient) -> None:
    job = submit(client).json()
    assert isinstance(job["params"]["seed"], int)


def test_submit_json_with_data_uris(client: TestClient) -> None:
    body = {
        "image_url": "data:image/png;base64," + base64.b64encode(IMAGE).decode(),
        "audio_url": "data:audio/wav;base64," + base64.b64encode(AUDIO).decode(),
        "fps": 24,
        "webhook_events": ["video.succeeded", "video.progress"],
    }
    response = client.post("/v1/videos", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["params"]["webhook_events"] == ["video.succeeded", "video.progress"]


def test_list_newest_first_and_cancel_queued(client: TestClient) -> None:
    first = submit(client).json()["id"]
    second = submit(client).json()["id"]
    page = client.get("/v1/videos", params={"limit": 1}).json()
    assert [j["id"] for j in page["data"]] == [second] and page["next_cursor"]
    rest = client.get("/v1/videos", params={"limit": 5, "cursor": page["next_cursor"]}).json()
    assert [j["id"] for j in rest["data"]] == [first] and rest["next_cursor"] is None
    canceled = client.post(f"/v1/videos/{first}/cancel").json()
    assert canceled["status"] == "canceled" and canceled["error"]["code"] == "canceled"
    assert client.get(f"/v1/videos/{first}/video").json()["error"]["code"] == "video_not_ready"


def test_idempotency_key_same_request_same_job_different_request_409(client: TestClient) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = submit(client, headers=headers, seed=1)
    again = submit(client, headers=headers, seed=1)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    different = submit(client, headers=headers, seed=2)
    assert different.status_code == 409 and different.json()["error"]["code"] == "idempotency_key_reused"
    assert len(client.get("/v1/videos").json()["data"]) == 1


def test_unknown_job_is_404_with_code(client: TestClient) -> None:
    for method, path in (
        ("get", "/v1/videos/vid_nope"),
        ("post", "/v1/videos/vid_nope/cancel"),
        ("get", "/v1/videos/vid_nope/video"),
    ):
        response = client.request(method, path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "storage": "ok"}


def test_openapi_describes_every_render_option(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    options = spec["components"]["schemas"]["RenderOptions"]["properties"]
    for name in (
        "engine",
        "fps",
        "size",
        "seed",
        "engine_options",
        "webhook_url",
        "metadata",
    ):
        assert options[name].get("description"), name
    schemas = spec["components"]["schemas"]
    for body in ("SubmitVideoForm", "SubmitVideoJson"):
        engine_options = schemas[body]["properties"]["engine_options"]
        assert {"$ref": "#/components/schemas/PatternOptions"} in engine_options["anyOf"]
    from core import __version__

    assert spec["info"]["version"] == __version__
    content = spec["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)


BAD_INPUTS = [
    # (description, request kwargs builder, status, code)
    ("garbage image", lambda: {"image": b"\x00garbage"}, 422, "invalid_image"),
    ("truncated image", lambda: {"image": image_bytes(300, 300, "JPEG")[:500]}, 422, "invalid_image"),
    ("gif image", lambda: {"image": image_bytes(300, 300, "GIF")}, 422, "unsupported_image_format"),
    ("tiny image", lambda: {"image": image_bytes(100, 300)}, 422, "image_too_small"),
    ("huge image file", lambda: {"image": b"\x89PNG" + b"0" * 2_100_000}, 413, "image_too_large"),
    ("bomb past pillow's cap", lambda: {"image": png_header(20_000, 10_000)}, 413, "image_too_large"),
    ("garbage audio", lambda: {"audio": b"ID3\x03garbage"}, 422, "invalid_audio"),
    ("image as audio", lambda: {"audio": IMAGE}, 422, "invalid_audio"),
    ("short audio", lambda: {"audio": wav_bytes(0.3)}, 422, "audio_too_short"),
    ("long audio", lambda: {"audio": encoded_audio(6.0, "mp3", "libmp3lame")}, 422, "audio_too_long"),
    ("bad fps", lambda: {"fields": {"fps": 500}}, 422, "invalid_params"),
    ("size not multiple of 8", lambda: {"fields": {"size": 130}}, 422, "invalid_params"),
    ("unknown option", lambda: {"fields": {"colour": "red"}}, 422, "invalid_params"),
    ("unknown engine", lambda: {"fields": {"engine": "warp9"}}, 422, "engine_unavailable"),
    ("bad webhook url", lambda: {"fields": {"webhook_url": "ftp://x"}}, 422, "invalid_params"),
    (
        "webhook without secret",
        lambda: {"fields": {"webhook_url": "https://example.com/h"}},
        422,
        "webhooks_not_configured",
    ),
    ("metadata not json", lambda: {"fields": {"metadata": "{oops"}}, 422, "invalid_params"),
]


@pytest.mark.parametrize(("name", "build", "status", "code"), BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_multipart_inputs(client: TestClient, name: str, build: Any, status: int, code: str) -> None:
    spec = build()
    response = submit(
        client, image=spec.get("image", IMAGE), audio=spec.get("audio", AUDIO), **spec.get("fields", {})
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert client.get("/v1/videos").json()["data"] == []  # nothing was queued


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"image=1", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "invalid_request"),
        ({"json": ["a list"]}, 422, "invalid_request"),
        ({"json": {"audio_url": "data:audio/wav;base64,AAAA"}}, 422, "missing_image"),
        ({"json": {"image_url": "http://example.com/a.png", "audio_url": "data:,x"}}, 422, "invalid_url"),
        ({"json": {"image_url": "data:image/png;base64,@@@", "audio_url": "data:,x"}}, 422, "invalid_url"),
        ({"files": {"image": ("a.png", IMAGE, "image/png")}}, 422, "missing_audio"),
        (
            {"data": {"image": "not a file"}, "files": {"audio": ("a.wav", AUDIO, "audio/wav")}},
            422,
            "invalid_request",
        ),
        (
            {"content": b"x" * 3_100_000, "headers": {"content-type": "application/json"}},
            413,
            "payload_too_large",
        ),
    ],
)
def test_bad_requests(client: TestClient, kwargs: dict[str, Any], status: int, code: str) -> None:
    response = client.post("/v1/videos", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_streamed_body_without_length_is_capped(client: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(40):
            yield b"y" * 100_000

    response = client.post("/v1/videos", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_webhook_url_is_checked_when_webhooks_are_configured(settings: Any) -> None:
    from tests.service.conftest import make_app

    configured = settings.model_copy(
        update={"webhook_secret": "whsec_" + base64.b64encode(b"k" * 32).decode()}
    )
    with TestClient(make_app(configured)) as client:
        for url, code in (
            ("http://example.com/h", "invalid_webhook_url"),
            ("https://user:pw@example.com/h", "invalid_webhook_url"),
        ):
            response = submit(client, webhook_url=url)
            assert response.status_code == 422 and response.json()["error"]["code"] == code
        accepted = submit(client, webhook_url="https://example.com/h", webhook_events="video.succeeded")
        assert accepted.status_code == 202
        assert accepted.json()["params"]["webhook_events"] == ["video.succeeded"]


def test_invalid_list_cursor_is_400_with_code(client: TestClient) -> None:
    response = client.get("/v1/videos", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_cursor"


def small_video() -> bytes:
    return encode_segment(np.full((5, 32, 48, 3), 128, np.uint8), 25)


def submit_with_driving(client: TestClient, driving: bytes) -> Any:
    files = {
        "image": ("portrait.png", IMAGE, "image/png"),
        "audio": ("speech.wav", AUDIO, "audio/wav"),
        "driving_video": ("drive.mp4", driving, "video/mp4"),
    }
    return client.post("/v1/videos", files=files)


@pytest.mark.parametrize(
    "driving", [b"this is plain text", AUDIO, small_video()[:200]], ids=["text", "audio", "truncated"]
)
def test_bad_driving_video_is_refused_at_submit(client: TestClient, driving: bytes) -> None:
    response = submit_with_driving(client, driving)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_driving_video"
    body = {
        "image_url": "data:image/png;base64," + base64.b64encode(IMAGE).decode(),
        "audio_url": "data:audio/wav;base64," + base64.b64encode(AUDIO).decode(),
        "driving_video_url": "data:video/mp4;base64," + base64.b64encode(driving).decode(),
    }
    response = client.post("/v1/videos", json=body)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_driving_video"
    assert client.get("/v1/videos").json()["data"] == []


def test_decodable_driving_video_is_accepted(client: TestClient) -> None:
    assert submit_with_driving(client, small_video()).status_code == 202


def test_list_filters_by_status_and_pages_within_it(client: TestClient) -> None:
    ids = [submit(client).json()["id"] for _ in range(5)]
    for job_id in ids[1::2]:
        client.post(f"/v1/videos/{job_id}/cancel")
    canceled = client.get("/v1/videos", params={"status": "canceled"}).json()
    assert [j["id"] for j in canceled["data"]] == [ids[3], ids[1]] and canceled["next_cursor"] is None
    first = client.get("/v1/videos", params={"status": "queued", "limit": 2}).json()
    assert [j["id"] for j in first["data"]] == [ids[4], ids[2]] and first["next_cursor"]
    rest = client.get(
        "/v1/videos", params={"status": "queued", "limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["next_cursor"] is None
    assert client.get("/v1/videos", params={"status": "succeeded"}).json() == {
        "data": [],
        "next_cursor": None,
    }
    unknown = client.get("/v1/videos", params={"status": "runnning"})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "invalid_request"


def test_an_engine_no_live_worker_serves_is_refused_before_anything_is_stored(
    settings: Settings, redis_url: str
) -> None:
    """Without this, the job would wait forever on a queue nobody listens to (a deploy mismatch)."""
    from core.workers import WorkerRegistry
    from tests.service.conftest import make_app

    registry = WorkerRegistry(redis.Redis.from_url(redis_url))
    registry.withdraw("test-worker-test", "test")
    with TestClient(make_app(settings), raise_server_exceptions=False) as client:
        files = {"image": ("p.png", image_bytes(200, 200)), "audio": ("a.wav", wav_bytes(1.0))}
        refused = client.post("/v1/videos", files=files)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_unavailable"
        assert refused.headers["retry-after"] and client.get("/v1/videos").json()["data"] == []
        registry.announce("w1", "test", ttl_s=30)
        assert client.post("/v1/videos", files=files).status_code == 202


def test_queued_jobs_show_their_place_in_the_queue(client: TestClient, redis_url: str) -> None:
    ids = [submit(client).json()["id"] for _ in range(3)]
    assert [client.get(f"/v1/videos/{i}").json()["progress"]["queue_position"] for i in ids] == [0, 1, 2]
    listed = {job["id"]: job["progress"]["queue_position"] for job in client.get("/v1/videos").json()["data"]}
    assert listed == dict(zip(ids, [0, 1, 2], strict=True))
    from rq import Queue

    Queue("parla-test", connection=redis.Redis.from_url(redis_url)).pop_job_id()  # a worker takes the first
    assert [client.get(f"/v1/videos/{i}").json()["progress"]["queue_position"] for i in ids] == [None, 0, 1]
