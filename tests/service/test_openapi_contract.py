"""The OpenAPI document is the API's contract: what it says holds, and what the API does is in it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from core.webhooks import ALL_WEBHOOK_EVENTS
from service.errors import ERROR_CODE_DESCRIPTIONS, ErrorCode
from tests.service.conftest import make_app

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = {
    ("post", "/v1/videos"): "submit_video",
    ("get", "/v1/videos"): "list_videos",
    ("get", "/v1/videos/{job_id}"): "get_video",
    ("post", "/v1/videos/{job_id}/cancel"): "cancel_video",
    ("get", "/v1/videos/{job_id}/video"): "download_video",
    ("head", "/v1/videos/{job_id}/video"): "download_video_head",
    ("get", "/v1/videos/{job_id}/outputs/{name}"): "download_output",
    ("get", "/v1/videos/{job_id}/stream.m3u8"): "get_stream_playlist",
    ("get", "/v1/videos/{job_id}/stream/{index}.ts"): "get_stream_segment",
    ("get", "/v1/videos/{job_id}/preview.mp4"): "get_preview",
    ("get", "/v1/videos/{job_id}/thumbnail.jpg"): "get_thumbnail",
    ("get", "/v1/engines"): "list_engines",
    ("get", "/v1/engines/{name}"): "get_engine",
    ("get", "/healthz"): "get_health",
    ("get", "/readyz"): "get_readiness",
    ("get", "/metrics"): "get_metrics",
}


@pytest.fixture()
def spec(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_every_route_has_a_readable_operation_id(spec: dict[str, Any]) -> None:
    found = {(method, path): operation["operationId"] for method, path, operation in operations(spec)}
    assert found == OPERATIONS
    assert spec["openapi"].startswith("3.1")


def test_one_error_schema_with_every_code_and_no_framework_validation_error(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in str(spec) and "ValidationError" not in schemas
    assert set(schemas["ErrorCode"]["enum"]) == {code.value for code in ErrorCode}
    assert set(ERROR_CODE_DESCRIPTIONS) == set(ErrorCode)
    assert schemas["ErrorBody"]["required"] == ["error"]
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message"}
    for method, path, operation in operations(spec):
        for status, response in operation["responses"].items():
            if int(status) < 400 or method == "head" or not path.startswith("/v1/"):
                continue
            content = response["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
            for example in content["examples"].values():
                assert example["value"]["error"]["code"] in schemas["ErrorCode"]["enum"]


def test_every_real_status_is_documented_with_its_headers(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        responses = operation["responses"]
        if not path.startswith("/v1/"):
            assert operation["security"] == []
            continue
        assert operation.get("security") is None  # the document's: bearer
        for status in ("401", "500", "503"):
            assert status in responses, (method, path, status)
        assert "Retry-After" in responses["503"]["headers"]
        assert "WWW-Authenticate" in responses["401"]["headers"]
    paths = spec["paths"]
    submit = paths["/v1/videos"]["post"]["responses"]
    assert {"202", "409", "413", "415", "422", "429", "503"} <= set(submit)
    assert submit["429"]["headers"]["Retry-After"]["required"] is True
    assert "Location" in submit["202"]["headers"]
    assert (
        "invalid_cursor"
        in paths["/v1/videos"]["get"]["responses"]["400"]["content"]["application/json"]["examples"]
    )
    assert {"404", "409", "410", "416", "206", "307"} <= set(
        paths["/v1/videos/{job_id}/video"]["get"]["responses"]
    )
    assert "404" in paths["/v1/videos/{job_id}"]["get"]["responses"]
    assert "404" in paths["/v1/engines/{name}"]["get"]["responses"]
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer <key>`.",
    }


def test_both_submit_forms_are_documented_flat(spec: dict[str, Any]) -> None:
    body = spec["paths"]["/v1/videos"]["post"]["requestBody"]
    assert body["required"] is True
    content = body["content"]
    assert content["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/SubmitVideoForm"}
    assert content["multipart/form-data"]["encoding"]["engine_options"] == {"contentType": "application/json"}
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/SubmitVideoJson"}
    schemas = spec["components"]["schemas"]
    form, json_body = schemas["SubmitVideoForm"], schemas["SubmitVideoJson"]
    common = set(schemas["RenderOptions"]["properties"])
    assert common | {"image", "audio", "driving_video"} <= set(form["properties"])
    assert common | {"image_url", "audio_url", "driving_video_url"} <= set(json_body["properties"])
    assert form["required"] == ["image", "audio"] and json_body["required"] == ["image_url", "audio_url"]
    # No allOf with a closed schema: one flat object, so a body can satisfy it.
    assert "allOf" not in str(form) and "allOf" not in str(json_body)
    # Engine options: one JSON field, and each also flat (warp is enabled in this test's settings).
    assert {"$ref": "#/components/schemas/WarpOptions"} in form["properties"]["engine_options"]["anyOf"]
    assert "warp" in form["properties"]["head_motion"]["description"]
    # A form field is left out rather than sent as null.
    assert all("null" not in str(field) for field in form["properties"].values())


def test_webhook_events_are_in_the_webhooks_section(spec: dict[str, Any]) -> None:
    assert set(spec["webhooks"]) == set(ALL_WEBHOOK_EVENTS)
    for event, item in spec["webhooks"].items():
        operation = item["post"]
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header" and p["required"]}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"]["type"] == {"type": "string", "const": event}
        data = schema["properties"]["data"]
        if event == "video.chunk":
            job, chunk = data["allOf"]
            assert job["$ref"] == "#/components/schemas/Job" and chunk["required"] == ["chunk"]
            assert chunk["properties"]["chunk"]["$ref"] == "#/components/schemas/WebhookChunk"
        else:
            assert data["$ref"] == "#/components/schemas/Job"
    chunk_fields = spec["components"]["schemas"]["WebhookChunk"]["properties"]
    assert {"index", "frames", "segment_url", "playlist_url", "preview_url", "thumbnail_url"} <= set(
        chunk_fields
    )


@pytest.fixture()
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"engines": ["test", "warp"]})


def test_docs_pages_load_their_assets_from_this_server(client: TestClient) -> None:
    for page, assets in (
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"]),
        ("/redoc", ["redoc.standalone.js"]),
    ):
        response = client.get(page)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
        assert urls and all(url.startswith("/") for url in urls), urls
        assert "fonts.googleapis" not in response.text and "cdn." not in response.text
        for asset in assets:
            assert f"/docs/assets/{asset}" in urls
            served = client.get(f"/docs/assets/{asset}")
            assert served.status_code == 200 and len(served.content) > 1000, asset
        assert "/openapi.json" in response.text


def test_options_lists_every_method_of_the_path(client: TestClient) -> None:
    for path, methods in (
        ("/v1/videos", "GET, OPTIONS, POST"),
        ("/v1/videos/vid_x", "GET, OPTIONS"),
        ("/v1/videos/vid_x/video", "GET, HEAD, OPTIONS"),
        ("/v1/videos/vid_x/cancel", "OPTIONS, POST"),
    ):
        response = client.options(path)
        assert response.status_code == 204 and response.headers["allow"] == methods, path
        refused = client.delete(path)
        assert refused.status_code == 405 and refused.headers["allow"] == methods, path
        assert refused.json()["error"]["code"] == "method_not_allowed"
    assert client.options("/v1/nothing").status_code == 404


# Codes written with a variable part, and what they can be.
TEMPLATED = {
    "{name}_too_large": {"image_too_large", "audio_too_large", "driving_video_too_large"},
    "missing_{required}": {"missing_image", "missing_audio"},
}
CODE_LITERALS = [
    re.compile(r"""\bcode\s*=\s*f?["']([a-z_{}]+)["']"""),  # code="x", code = "x" (class attribute)
    re.compile(r"""_error\(\s*(?:send,\s*)?\d{3},\s*["']([a-z_]+)["']"""),  # _error(503, "x")
    re.compile(r"""^\s*\d{3}: ["']([a-z_]+)["'],$""", re.MULTILINE),  # HTTP_CODES entries
    re.compile(r"""\(code="([a-z_]+)","""),
    re.compile(r"""HTTP_CODES\.get\([^,]+,\s*["']([a-z_]+)["']\)"""),  # the fallback
]


def raised_codes() -> set[str]:
    found: set[str] = set()
    for package in ("core", "service", "models", "worker"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "errors.py" and path.parent.name == "service":
                continue
            text = path.read_text(encoding="utf-8")
            for pattern in CODE_LITERALS:
                for code in pattern.findall(text):
                    found |= TEMPLATED.get(code, {code})
    return found


def test_error_code_enum_is_every_code_the_code_base_raises() -> None:
    found = raised_codes()
    assert {"invalid_cursor", "job_not_found", "rate_limited", "request_header_too_large"} <= found
    listed = {code.value for code in ErrorCode}
    assert found - listed == set(), "add these to service.errors.ErrorCode"
    assert listed - found == set(), "service.errors.ErrorCode lists codes nothing raises"


@pytest.mark.parametrize(
    "engines", [["test", "warp"], ["test"], ["test", "warp", "vexpress", "vexpress-tiny"]]
)
def test_the_document_is_valid_openapi_and_every_example_fits_its_schema(
    settings: Settings, engines: list[str]
) -> None:
    from jsonschema import Draft202012Validator
    from openapi_spec_validator import validate

    with TestClient(make_app(settings.model_copy(update={"engines": engines}))) as client:
        spec = client.get("/openapi.json").json()
    validate(spec)
    form = spec["components"]["schemas"]["SubmitVideoForm"]["properties"]
    assert all("null" not in str(field) for field in form.values())
    checked = 0
    bodies: list[tuple[str, dict[str, Any]]] = []
    for method, path, operation in operations(spec):
        bodies += [(f"{method} {path} request", operation.get("requestBody", {}))]
        bodies += [(f"{method} {path} {status}", r) for status, r in operation["responses"].items()]
    for event, item in spec["webhooks"].items():
        bodies.append((f"webhook {event}", item["post"]["requestBody"]))
    for where, body in bodies:
        media = body.get("content", {}).get("application/json")
        if not media or "schema" not in media:
            continue
        validator = Draft202012Validator({**media["schema"], "components": spec["components"]})
        examples = [media["example"]] if "example" in media else []
        examples += [example["value"] for example in media.get("examples", {}).values()]
        for example in examples:
            errors = [error.message for error in validator.iter_errors(example)]
            assert errors == [], (where, errors)
            checked += 1
    assert checked > 50


def test_docs_list_every_error_code() -> None:
    from service.errors import error_codes_markdown

    text = (ROOT / "docs" / "api.md").read_text()
    begin, end = "<!-- error-codes:begin -->\n", "<!-- error-codes:end -->"
    table = text[text.index(begin) + len(begin) : text.index(end)].strip()
    assert table == error_codes_markdown(), "run `python -m service.errors` and paste it into docs/api.md"


def test_a_body_too_large_for_cancel_is_a_documented_413(client: TestClient, spec: dict[str, Any]) -> None:
    response = client.post("/v1/videos/vid_x/cancel", content=b"0" * 3_000_001)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert "413" in spec["paths"]["/v1/videos/{job_id}/cancel"]["post"]["responses"]


def test_docs_openapi_json_is_the_document_with_every_engine(settings: Settings) -> None:
    """docs/openapi.json lets clients be generated without a running API; it must not drift."""
    import json

    from models.registry import ENGINES
    from service.openapi import document_text

    every_engine = settings.model_copy(update={"engines": list(ENGINES)})
    with TestClient(make_app(every_engine)) as client:
        live = client.get("/openapi.json").json()
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == document_text(list(ENGINES)), "run `python -m service.openapi > docs/openapi.json`"
    assert json.loads(committed) == live


def test_engine_capabilities_are_typed_with_every_field() -> None:
    from dataclasses import fields

    from models.registry import Capabilities
    from service.routes.engines import EngineCapabilities

    assert set(EngineCapabilities.model_fields) == {field.name for field in fields(Capabilities)}
