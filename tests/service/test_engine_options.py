"""Engine options are typed per engine and checked at submit; ``GET /v1/engines`` lists what live workers serve."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from core.media import encode_segment
from core.settings import Settings
from core.workers import WorkerRegistry
from models.registry import ENGINES
from tests.media import image_bytes, wav_bytes
from tests.service.conftest import make_app

FILES = {"image": ("p.png", image_bytes(200, 200)), "audio": ("a.wav", wav_bytes(1.0))}

# For every engine: options it refuses (field named in the message), and options it takes.
REFUSED: dict[str, list[tuple[dict[str, Any], str]]] = {
    "warp": [
        ({"head_motion": 1.5}, "engine_options.head_motion"),
        ({"head_motion": "driving"}, "engine_options.head_motion"),
        ({"num_inference_steps": 10}, "engine_options.num_inference_steps"),
    ],
    "vexpress": [
        ({"context_frames": 40}, "engine_options.context_frames"),
        ({"context_frames": 8, "motion_frames": 8}, "motion_frames"),
        ({"guidance_scale": 0.5}, "engine_options.guidance_scale"),
        ({"retarget": "sideways"}, "engine_options.retarget"),
        ({"head_motion": "driving"}, "driving_video"),
        ({"colour": "red"}, "engine_options.colour"),
        ({"width": 100, "height": 64}, "engine_options.width: Value error, width 100 is not a multiple of 8"),
        ({"width": 96}, "width needs height too"),
        ({"width": 96, "height": 2048}, "engine_options.height"),
    ],
    "vexpress-tiny": [
        ({"num_inference_steps": 0}, "engine_options.num_inference_steps"),
        ({"continuity": "glue"}, "engine_options.continuity"),
    ],
    "hallo": [
        ({"pose_weight": -1.0}, "engine_options.pose_weight"),
        ({"face_weight": 6.0}, "engine_options.face_weight"),
        ({"lip_weight": "loud"}, "engine_options.lip_weight"),
        ({"face_expand_ratio": 0.5}, "engine_options.face_expand_ratio"),
        ({"num_inference_steps": 0}, "engine_options.num_inference_steps"),
        ({"guidance_scale": 0.5}, "engine_options.guidance_scale"),
        ({"clip_frames": 30, "motion_frames": 4}, "motion_frames"),
        ({"motion_mask_rate": 1.0}, "engine_options.motion_mask_rate"),
        ({"head_motion": "still"}, "engine_options.head_motion"),
    ],
    "hallo-tiny": [({"clip_frames": 0}, "engine_options.clip_frames")],
    "test": [({"head_motion": 0.5}, "engine_options.head_motion")],
    "aniportrait": [
        ({"context_frames": 33}, "engine_options.context_frames"),
        ({"context_frames": 8, "context_overlap": 8}, "context_overlap"),
        ({"head_motion": "sway"}, "engine_options.head_motion"),
        ({"head_motion": "driving"}, "driving_video"),
    ],
    "aniportrait-tiny": [
        ({"num_inference_steps": 0}, "engine_options.num_inference_steps"),
        ({"guidance_scale": 30}, "engine_options.guidance_scale"),
    ],
    "liveportrait": [
        ({"sway_degrees": 20}, "engine_options.sway_degrees"),
        ({"head_motion": "driving"}, "driving_video"),
        ({"eye_retargeting": True}, "head_motion"),
        ({"motion_model": "sadtalker"}, "engine_options.motion_model"),
        ({"emotion": "happy"}, "emotion"),  # a motion control without a motion model
        ({"motion_model": "joyvasa", "emotion": "sad"}, "emotion"),  # JoyVASA has no emotion condition
        ({"motion_model": "ditto", "head_motion": "driving"}, "head_motion"),
        ({"motion_model": "ditto", "sway_degrees": 5}, "sway_degrees"),
    ],
    "liveportrait-tiny": [
        ({"driving_option": "fast"}, "engine_options.driving_option"),
        ({"motion_model": "joyvasa", "steps": 10}, "steps"),
        ({"motion_model": "ditto", "head_distance": 5}, "engine_options.head_distance"),
    ],
}
ACCEPTED: dict[str, dict[str, Any]] = {
    "warp": {"head_motion": 0.8},
    "vexpress": {
        "num_inference_steps": 10,
        "context_frames": 16,
        "motion_frames": 2,
        "width": 96,
        "height": 64,
    },
    "vexpress-tiny": {"continuity": "overlap_average"},
    "hallo": {"pose_weight": 1.2, "face_weight": 0.8, "lip_weight": 1.5, "face_expand_ratio": 1.5},
    "hallo-tiny": {"num_inference_steps": 1, "guidance_scale": 1.0, "motion_mask_rate": 0.25},
    "test": {},
    "aniportrait": {"num_inference_steps": 10, "head_motion": "still", "context_overlap": 2},
    "aniportrait-tiny": {"context_frames": 8, "guidance_scale": 1.0},
    "liveportrait": {"head_motion": "still", "lip_multiplier": 1.5},
    "liveportrait-tiny": {
        "motion_model": "ditto",
        "emotion": "happy",
        "gaze": [5.0, -2.0],
        "head_distance": 1.2,
        "steps": 10,
    },
}


def test_every_engine_has_refusal_cases() -> None:
    assert set(REFUSED) == set(ENGINES) == set(ACCEPTED)


@pytest.fixture()
def all_engines(settings: Settings, redis_url: str) -> Iterator[TestClient]:
    settings = settings.model_copy(update={"engines": sorted(ENGINES)})
    registry = WorkerRegistry(redis.Redis.from_url(redis_url))
    for name in ENGINES:
        registry.announce(f"w-{name}", name, ttl_s=60, card={"device": "cpu", "weights_loaded": True})
    with TestClient(make_app(settings), raise_server_exceptions=False) as client:
        yield client


CASES = [(engine, options, field) for engine, cases in REFUSED.items() for options, field in cases]


@pytest.mark.parametrize(("engine", "options", "field"), CASES, ids=[f"{e}-{f}" for e, _, f in CASES])
def test_an_option_the_engine_refuses_is_a_422_at_submit(
    all_engines: TestClient, engine: str, options: dict[str, Any], field: str
) -> None:
    for body in (
        {"engine": engine, **{key: str(value) for key, value in options.items()}},  # flat form fields
        {"engine": engine, "engine_options": _json(options)},  # one JSON form field
    ):
        response = all_engines.post("/v1/videos", files=FILES, data=body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_params" and field in error["message"], error
    assert all_engines.get("/v1/videos").json()["data"] == []  # nothing stored, nothing queued


@pytest.mark.parametrize("engine", sorted(ACCEPTED))
def test_accepted_options_are_recorded_with_every_default(all_engines: TestClient, engine: str) -> None:
    response = all_engines.post(
        "/v1/videos", files=FILES, data={"engine": engine, "engine_options": _json(ACCEPTED[engine])}
    )
    assert response.status_code == 202, response.text
    recorded = response.json()["params"]["engine_options"]
    assert recorded == {**ENGINES[engine].defaults(), **ACCEPTED[engine]}


def test_json_submissions_take_nested_and_top_level_engine_options(all_engines: TestClient) -> None:
    data_uri = {
        "image_url": "data:image/png;base64," + base64.b64encode(FILES["image"][1]).decode(),
        "audio_url": "data:audio/wav;base64," + base64.b64encode(FILES["audio"][1]).decode(),
    }
    nested = all_engines.post(
        "/v1/videos", json={**data_uri, "engine": "vexpress", "engine_options": {"num_inference_steps": 7}}
    )
    flat = all_engines.post("/v1/videos", json={**data_uri, "engine": "vexpress", "num_inference_steps": 7})
    for response in (nested, flat):
        assert response.status_code == 202, response.text
        assert response.json()["params"]["engine_options"]["num_inference_steps"] == 7
    both = all_engines.post(
        "/v1/videos",
        json={
            **data_uri,
            "engine": "vexpress",
            "num_inference_steps": 7,
            "engine_options": {"num_inference_steps": 8},
        },
    )
    assert both.status_code == 422 and "num_inference_steps" in both.json()["error"]["message"]
    wrong_type = all_engines.post("/v1/videos", json={**data_uri, "engine": "warp", "engine_options": [1]})
    assert wrong_type.status_code == 422 and wrong_type.json()["error"]["code"] == "invalid_params"


def test_a_driving_video_for_an_engine_without_one_is_refused(all_engines: TestClient) -> None:
    video = encode_segment(np.full((5, 32, 48, 3), 128, np.uint8), 25)
    files = {**FILES, "driving_video": ("d.mp4", video, "video/mp4")}
    refused = all_engines.post("/v1/videos", files=files, data={"engine": "warp"})
    assert refused.status_code == 422 and "driving video" in refused.json()["error"]["message"]
    accepted = all_engines.post(
        "/v1/videos", files=files, data={"engine": "vexpress", "head_motion": "driving"}
    )
    assert accepted.status_code == 202, accepted.text


def test_engines_lists_exactly_what_live_workers_serve(settings: Settings, redis_url: str) -> None:
    client_redis = redis.Redis.from_url(redis_url)
    client_redis.flushdb()  # no announcement from the autouse fixture
    settings = settings.model_copy(update={"engine": "warp", "engines": ["warp", "vexpress", "test"]})
    registry = WorkerRegistry(client_redis)
    registry.announce("gpu-1", "vexpress", ttl_s=60, card={"device": "cuda", "weights_loaded": True})
    registry.announce("gpu-2", "vexpress", ttl_s=60, card={"device": "cuda", "weights_loaded": True})
    registry.announce("cpu-1", "warp", ttl_s=60, card={"device": "cpu", "weights_loaded": True})
    registry.announce("gone", "test", ttl_s=0.001)
    registry.announce("other", "vexpress-tiny", ttl_s=60)  # live, but not enabled in this deployment
    with TestClient(make_app(settings), raise_server_exceptions=False) as client:
        body = client.get("/v1/engines").json()
        by_name = {engine["name"]: engine for engine in body["data"]}
        assert sorted(by_name) == ["vexpress", "warp"]
        vexpress = by_name["vexpress"]
        assert vexpress["workers"] == {"count": 2, "devices": ["cuda", "cuda"], "weights_loaded": True}
        assert vexpress["capabilities"]["driving_video"] and vexpress["capabilities"]["needs_weights"]
        assert vexpress["defaults"]["num_inference_steps"] == 25 and not vexpress["default"]
        assert vexpress["options_schema"]["properties"]["context_frames"]["maximum"] == 32
        assert by_name["warp"]["default"] and not by_name["warp"]["capabilities"]["driving_video"]
        assert client.get("/v1/engines/warp").json()["name"] == "warp"
        missing = client.get("/v1/engines/test")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "engine_not_found"
        registry.withdraw("cpu-1", "warp")
        assert [e["name"] for e in client.get("/v1/engines").json()["data"]] == ["vexpress"]


def test_the_api_refuses_to_start_with_an_unknown_engine(settings: Settings) -> None:
    with pytest.raises(ValueError, match="warp9"):
        make_app(settings.model_copy(update={"engines": ["test", "warp9"]}))


def test_openapi_documents_each_engines_options(all_engines: TestClient) -> None:
    schemas = all_engines.get("/openapi.json").json()["components"]["schemas"]
    for spec in ENGINES.values():
        schema = schemas[spec.options.__name__]
        for name, field in schema.get("properties", {}).items():
            assert field.get("description"), (spec.name, name)


def _json(value: Any) -> str:
    return json.dumps(value)
