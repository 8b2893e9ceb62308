"""The API's contract: error bodies, per-route statuses, the two submit forms, auth, webhooks, docs pages.

FastAPI derives most of the OpenAPI document from the routes; this module adds what it cannot see:

- ``ErrorBody``, the one error shape (``{"error": {"code", "message"}}``, ``code`` from
  ``service.errors.ErrorCode``), documented for every status a route really answers, with the
  headers that come with it (``Retry-After`` on 429 and 503, ``WWW-Authenticate`` on 401). FastAPI's
  ``HTTPValidationError`` is dropped: the API answers a malformed request with ``invalid_request``.
- The submit body: ``POST /v1/videos`` reads the request itself, so its two forms are written out
  here from ``RenderOptions`` and the enabled engines' option models: ``SubmitVideoForm``
  (multipart: files, the common options as flat fields, ``engine_options`` as one JSON field, and
  each engine option as a flat field too) and ``SubmitVideoJson`` (URLs and options in one object).
- Bearer ``securitySchemes``; the health routes need no key.
- The webhook events (OpenAPI 3.1 ``webhooks``) with their Standard Webhooks headers.
- ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served with assets from the ``fastapi_offline``
  package, so the pages work without reaching any other host.
"""

from __future__ import annotations

import copy
from importlib.resources import files
from typing import Annotated, Any, Final

from fastapi import FastAPI, Path, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.routing import Match, Mount
from starlette.types import Scope

from core.webhooks import (
    ALL_WEBHOOK_EVENTS,
    DEFAULT_WEBHOOK_EVENTS,
    EVENT_CHUNK,
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    STREAM_WEBHOOK_EVENTS,
)
from models.registry import engine_spec
from service.errors import ERROR_CODE_DESCRIPTIONS, ErrorCode

Responses = dict[int | str, dict[str, Any]]

SECURITY_SCHEME: Final = "bearerAuth"
EXAMPLE_JOB_ID: Final = "vid_abcdefghijk234567mnp"
DOCS_ASSETS_URL: Final = "/docs/assets"


JobId = Annotated[
    str, Path(description="The job's id, as the submit answered it.", examples=[EXAMPLE_JOB_ID])
]
"""A ``{job_id}`` path parameter."""


class ErrorDetail(BaseModel):
    """What went wrong: a stable code to branch on and a message for people."""

    code: ErrorCode = Field(description="Machine-readable; see `ErrorCode` for every value.")
    message: str = Field(description="Human-readable; may change between versions.")


class ErrorBody(BaseModel):
    """Every error the API answers: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class Health(BaseModel):
    status: str = Field(description="`ok` whenever the process answers.", examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(description="`ready`, or `unavailable` (then the status is 503).")
    checks: dict[str, str] = Field(description="`ok` or `error: <type>` for `redis` and `storage`.")


EXAMPLE_MESSAGES: Final[dict[ErrorCode, str]] = {
    ErrorCode.UNAUTHORIZED: "missing or invalid API key (send `Authorization: Bearer <key>`)",
    ErrorCode.JOB_NOT_FOUND: "no video job 'vid_abcdefghijk234567mnp'",
    ErrorCode.ENGINE_NOT_FOUND: "engine 'nope' is not served here",
    ErrorCode.INVALID_CURSOR: "invalid cursor",
    ErrorCode.INVALID_PARAMS: "fps: Input should be less than or equal to 60",
    ErrorCode.INVALID_REQUEST: "limit: Input should be less than or equal to 100",
    ErrorCode.RATE_LIMITED: "limit reached: 10 submissions per minute",
    ErrorCode.SERVICE_UNAVAILABLE: "the job store is unavailable; retry shortly",
    ErrorCode.VIDEO_NOT_READY: "the video is not ready (status running)",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "send multipart/form-data (files) or application/json (URLs)",
}

RETRY_AFTER_HEADER: Final = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
STATUS_DESCRIPTIONS: Final[dict[int, str]] = {
    400: "Bad request",
    401: "No API key, or an unknown one",
    404: "Not found (or not yours)",
    408: "The client paused too long while sending the body",
    409: "Conflict",
    410: "Gone",
    413: "Too large",
    415: "Unsupported content type",
    416: "Range not satisfiable",
    422: "Invalid input",
    429: "Rate limited: retry after `Retry-After` seconds",
    431: "Request headers too large",
    500: "Unexpected failure (logged)",
    503: "Temporarily unavailable: retry after `Retry-After` seconds",
}


def error_response(status: int, *codes: ErrorCode, body: bool = True) -> dict[str, Any]:
    """One documented error status: its codes (listed and given as examples) and its headers."""
    listing = "; ".join(f"`{code.value}`" for code in codes)
    response: dict[str, Any] = {"description": f"{STATUS_DESCRIPTIONS[status]}. Codes: {listing}."}
    if body:
        response["model"] = ErrorBody
        response["content"] = {
            "application/json": {
                "examples": {
                    code.value: {
                        "summary": ERROR_CODE_DESCRIPTIONS[code],
                        "value": {
                            "error": {
                                "code": code.value,
                                "message": EXAMPLE_MESSAGES.get(code, ERROR_CODE_DESCRIPTIONS[code]),
                            }
                        },
                    }
                    for code in codes
                }
            }
        }
    if status in (429, 503):
        response["headers"] = copy.deepcopy(RETRY_AFTER_HEADER)
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {"required": True, "schema": {"type": "string"}, "example": "Bearer"}
        }
    if status == 416:
        response["headers"] = {
            "Content-Range": {"required": True, "schema": {"type": "string"}, "example": "bytes */48213"}
        }
    return response


def errors(*entries: tuple[int, tuple[ErrorCode, ...]], body: bool = True) -> Responses:
    """A ``/v1`` route's error statuses: ``entries``, and the 401, 431, 500 and 503 of every one."""
    common: tuple[tuple[int, tuple[ErrorCode, ...]], ...] = (
        (401, (ErrorCode.UNAUTHORIZED,)),
        (431, (ErrorCode.REQUEST_HEADER_TOO_LARGE,)),
        (500, (ErrorCode.INTERNAL_ERROR,)),
        (503, (ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.STORAGE_ERROR)),
    )
    merged = dict(common)
    merged.update(dict(entries))
    return {status: error_response(status, *codes, body=body) for status, codes in sorted(merged.items())}


E = ErrorCode
SUBMIT_ERRORS: Final = errors(
    (408, (E.REQUEST_TIMEOUT,)),
    (409, (E.IDEMPOTENCY_KEY_REUSED, E.IDEMPOTENCY_IN_PROGRESS)),
    (413, (E.PAYLOAD_TOO_LARGE, E.IMAGE_TOO_LARGE, E.AUDIO_TOO_LARGE, E.DRIVING_VIDEO_TOO_LARGE)),
    (415, (E.UNSUPPORTED_MEDIA_TYPE,)),
    (
        422,
        (
            E.INVALID_REQUEST,
            E.INVALID_PARAMS,
            E.MISSING_IMAGE,
            E.MISSING_AUDIO,
            E.INVALID_IMAGE,
            E.UNSUPPORTED_IMAGE_FORMAT,
            E.IMAGE_TOO_SMALL,
            E.INVALID_AUDIO,
            E.AUDIO_TOO_SHORT,
            E.AUDIO_TOO_LONG,
            E.INVALID_DRIVING_VIDEO,
            E.INVALID_URL,
            E.URL_FETCH_FAILED,
            E.NO_FACE_FOUND,
            E.FACE_NOT_FOUND,
            E.FACE_TOO_SMALL,
            E.FACE_NOT_FRONTAL,
            E.ENGINE_UNAVAILABLE,
            E.INVALID_WEBHOOK_URL,
            E.WEBHOOKS_NOT_CONFIGURED,
        ),
    ),
    (429, (E.RATE_LIMITED,)),
    (503, (E.SERVICE_UNAVAILABLE, E.STORAGE_ERROR, E.ENGINE_UNAVAILABLE)),
)
LIST_ERRORS: Final = errors((400, (E.INVALID_CURSOR,)), (422, (E.INVALID_REQUEST,)))
JOB_ERRORS: Final = errors((404, (E.JOB_NOT_FOUND,)))
CANCEL_ERRORS: Final = errors(
    (404, (E.JOB_NOT_FOUND,)), (408, (E.REQUEST_TIMEOUT,)), (413, (E.PAYLOAD_TOO_LARGE,))
)
"""A cancel takes no body, but one that is sent is read under the same limits as a submit's."""
ENGINE_LIST_ERRORS: Final = errors()
ENGINE_ERRORS: Final = errors((404, (E.ENGINE_NOT_FOUND,)))
_DOWNLOAD_ENTRIES: Final = (
    (404, (E.JOB_NOT_FOUND, E.VIDEO_NOT_FOUND)),
    (409, (E.VIDEO_NOT_READY,)),
    (410, (E.VIDEO_EXPIRED,)),
    (416, (E.RANGE_NOT_SATISFIABLE,)),
)
DOWNLOAD_ERRORS: Final = errors(*_DOWNLOAD_ENTRIES)
OUTPUT_ERRORS: Final = errors(
    (404, (E.JOB_NOT_FOUND, E.OUTPUT_NOT_FOUND)),
    (409, (E.VIDEO_NOT_READY,)),
    (410, (E.VIDEO_EXPIRED,)),
    (422, (E.INVALID_REQUEST,)),
)
PLAYLIST_ERRORS: Final = errors((404, (E.JOB_NOT_FOUND,)))
SEGMENT_ERRORS: Final = errors((404, (E.JOB_NOT_FOUND, E.SEGMENT_NOT_FOUND)), (422, (E.INVALID_REQUEST,)))
PREVIEW_ERRORS: Final = errors((404, (E.JOB_NOT_FOUND,)), (409, (E.PREVIEW_NOT_READY,)))
DOWNLOAD_HEAD_ERRORS: Final = errors(*_DOWNLOAD_ENTRIES, body=False)
"""A HEAD answer has the status and headers of the GET, without its body."""


# --- the submit body ------------------------------------------------------------------------------

FILE_DESCRIPTIONS: Final = {
    "image": "Portrait: PNG, JPEG or WebP, one face (or pick one with `face_index`).",
    "audio": "Speech: WAV, MP3, M4A, OGG or FLAC. The video lasts as long as the speech.",
    "driving_video": "Optional head motion to follow (engines whose capabilities say `driving_video`).",
}
URL_DESCRIPTION: Final = (
    "An https:// URL (fetched once, no redirects followed) or a `data:` URI (`data:<type>;base64,...`)."
)


def _engine_option_fields(engine_names: list[str], common: set[str]) -> dict[str, dict[str, Any]]:
    """Each enabled engine's option as a flat form field; a name shared by engines lists each schema."""
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name in engine_names:
        schema = engine_spec(name).options.model_json_schema()
        for field, field_schema in schema.get("properties", {}).items():
            if field not in common:
                found.setdefault(field, []).append((name, field_schema))
    fields: dict[str, dict[str, Any]] = {}
    for field, per_engine in sorted(found.items()):
        engines = ", ".join(f"`{name}`" for name, _ in per_engine)
        distinct: list[dict[str, Any]] = []
        for _, field_schema in per_engine:
            value = {
                key: item
                for key, item in _without_null(field_schema).items()
                if key not in ("title", "default", "description")
            }
            alternatives = value["anyOf"] if set(value) == {"anyOf"} else [value]
            distinct += [item for item in alternatives if item not in distinct]
        described = per_engine[0][1].get("description", "")
        entry = distinct[0] if len(distinct) == 1 else {"anyOf": distinct}
        fields[field] = {
            **entry,
            "description": f"Engine option of {engines} (the same as in `engine_options`). {described}",
        }
    return fields


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its ``null`` alternative (a form field is left out instead)."""
    alternatives = [item for item in schema.get("anyOf", []) if item != {"type": "null"}]
    if not alternatives or len(alternatives) == len(schema["anyOf"]):
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**alternatives[0], **rest} if len(alternatives) == 1 else {**rest, "anyOf": alternatives}


def _submit_schemas(
    components: dict[str, Any], engine_names: list[str], engine_refs: list[dict[str, str]]
) -> dict[str, Any]:
    """``SubmitVideoForm`` and ``SubmitVideoJson``, built from ``RenderOptions``' schema.

    ``engine_options`` is any enabled engine's options model (``engine_refs``); which one applies
    depends on ``engine``, which a schema without conditionals cannot say.
    """
    options = copy.deepcopy(components["RenderOptions"]["properties"])
    for field in options.values():
        field.pop("title", None)
    options["engine"] = {
        "anyOf": [{"type": "string", "enum": list(engine_names)}, {"type": "null"}],
        "description": "Engine to render with (`GET /v1/engines` lists those served); the "
        "deployment's default if unset.",
    }
    options["metadata"] = {
        "type": "object",
        "additionalProperties": True,
        "description": options["metadata"].get("description", "") + " Omit it for none.",
        "examples": [{"order": "1234"}],
    }
    options["webhook_url"] = {
        "anyOf": [
            {"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2048},
            {"type": "null"},
        ],
        "description": "URL that receives the job's events (https; signed with the deployment's secret).",
    }
    options["engine_options"] = {
        "anyOf": engine_refs,
        "description": "The chosen engine's own options (`GET /v1/engines` lists each engine's, with "
        "their defaults); checked at submit, and recorded with every default filled in.",
    }
    form_fields: dict[str, Any] = {
        name: {"type": "string", "format": "binary", "description": description}
        for name, description in FILE_DESCRIPTIONS.items()
    }
    form_fields.update({name: _without_null(copy.deepcopy(field)) for name, field in options.items()})
    form_fields["engine_options"] = {
        "anyOf": engine_refs,
        "description": "The chosen engine's options as one JSON object (a part of type "
        "application/json, or a plain field holding JSON). Each may also be sent as its own flat field.",
    }
    form_fields["webhook_events"] = {
        "type": "array",
        "items": {"type": "string", "enum": list(ALL_WEBHOOK_EVENTS)},
        "description": "Events to send (repeat the field, or give a JSON array or a comma-separated "
        f"list); default: {', '.join(DEFAULT_WEBHOOK_EVENTS)}.",
    }
    form_fields.update(_engine_option_fields(engine_names, set(form_fields)))
    form = {
        "title": "SubmitVideoForm",
        "type": "object",
        "description": "`multipart/form-data`: the files, plus each render option as a flat field.",
        "required": ["image", "audio"],
        "properties": form_fields,
        "additionalProperties": False,
    }
    json_fields: dict[str, Any] = {
        f"{name}_url": {
            "type": "string",
            "minLength": 1,
            "description": f"{FILE_DESCRIPTIONS[name]} {URL_DESCRIPTION}",
        }
        for name in FILE_DESCRIPTIONS
    }
    json_fields.update(options)
    json_body = {
        "title": "SubmitVideoJson",
        "type": "object",
        "description": "`application/json`: the inputs as URLs, plus the render options.",
        "required": ["image_url", "audio_url"],
        "properties": json_fields,
        "additionalProperties": False,
    }
    return {"SubmitVideoForm": form, "SubmitVideoJson": json_body}


TINY_PNG: Final = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4"
    "AAAAAElFTkSuQmCC"
)

SUBMIT_REQUEST_BODY: Final = {
    "required": True,
    "description": "The portrait and the speech, as files (multipart) or as URLs (JSON), with options.",
    "content": {
        "multipart/form-data": {
            "schema": {"$ref": "#/components/schemas/SubmitVideoForm"},
            "encoding": {
                "image": {"contentType": "image/png, image/jpeg, image/webp"},
                "audio": {"contentType": "audio/*"},
                "driving_video": {"contentType": "video/*"},
                "engine_options": {"contentType": "application/json"},
                "metadata": {"contentType": "application/json"},
            },
        },
        "application/json": {
            "schema": {"$ref": "#/components/schemas/SubmitVideoJson"},
            "examples": {
                "urls": {
                    "summary": "Inputs fetched from https URLs",
                    "value": {
                        "image_url": "https://example.com/portrait.jpg",
                        "audio_url": "https://example.com/speech.mp3",
                        "engine": "warp",
                        "fps": 25,
                        "engine_options": {"head_motion": 0.8},
                        "metadata": {"order": "1234"},
                    },
                },
                "data_uris": {
                    "summary": "Inputs inline as data: URIs",
                    "value": {"image_url": TINY_PNG, "audio_url": "data:audio/wav;base64,UklGRi..."},
                },
            },
        },
    },
}

JOB_EXAMPLE: Final[dict[str, Any]] = {
    "id": "vid_abcdefghijk234567mnp",
    "status": "succeeded",
    "created_at": "2026-12-01T10:00:00Z",
    "started_at": "2026-12-01T10:00:01Z",
    "finished_at": "2026-12-01T10:00:09Z",
    "progress": {"chunks_done": 2, "chunks_total": 2, "frames_done": 100, "frames_total": 100},
    "params": {
        "engine": "warp",
        "fps": 25.0,
        "size": 512,
        "seed": 1234,
        "framing": "crop",
        "face_index": None,
        "engine_options": {"head_motion": 0.8},
        "webhook_url": None,
        "webhook_events": None,
        "metadata": {"order": "1234"},
    },
    "metadata": {"order": "1234"},
    "result": {
        "video_url": "https://parla.example.com/v1/videos/vid_abcdefghijk234567mnp/video",
        "duration_s": 4.0,
        "fps": 25.0,
        "frames": 100,
        "width": 512,
        "height": 512,
        "bytes": 48213,
    },
    "error": None,
    "attempts": 1,
    "webhooks": [],
}


QUEUED_JOB_EXAMPLE: Final[dict[str, Any]] = {
    **JOB_EXAMPLE,
    "status": "queued",
    "started_at": None,
    "finished_at": None,
    "progress": {"chunks_done": 0, "chunks_total": 0, "frames_done": 0, "frames_total": 0},
    "result": None,
    "attempts": 0,
}


def submit_responses() -> Responses:
    """``POST /v1/videos``: 202 with the job, its ``Location``, and whether it is an idempotent replay."""
    return {
        202: {
            "description": "Accepted: the job is queued (or, for a repeated `Idempotency-Key`, the "
            "job of the first request, with `Idempotent-Replayed: true`).",
            "headers": {
                "Location": {"required": True, "schema": {"type": "string"}, "description": "The job's URL."},
                "Idempotent-Replayed": {
                    "schema": {"type": "string", "enum": ["true"]},
                    "description": "Present when this is the answer to an earlier request with the same key.",
                },
            },
            "content": {"application/json": {"example": QUEUED_JOB_EXAMPLE}},
        },
        **SUBMIT_ERRORS,
    }


# --- webhooks -------------------------------------------------------------------------------------

WEBHOOK_SUMMARIES: Final = {
    "video.started": "A worker started rendering the job.",
    "video.progress": "A chunk of the video is rendered (one attempt, never retried).",
    "video.chunk": "A chunk is stored: `data.chunk` names its frames and the live-preview links.",
    "video.succeeded": "The video is ready: `data.result.video_url` downloads it.",
    "video.failed": "The job failed: `data.error` says why.",
    "video.canceled": "The job was canceled.",
}


WEBHOOK_CHUNK_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "The chunk a `video.chunk` event is about. The links are API routes: they take "
    "the same bearer key as the rest of `/v1`.",
    "required": [
        "index",
        "start_frame",
        "stop_frame",
        "frames",
        "segment_url",
        "playlist_url",
        "preview_url",
        "thumbnail_url",
    ],
    "properties": {
        "index": {"type": "integer", "minimum": 0, "description": "The chunk's index (0 = first)."},
        "start_frame": {"type": "integer", "minimum": 0, "description": "Its first frame in the video."},
        "stop_frame": {"type": "integer", "minimum": 1, "description": "One past its last frame."},
        "frames": {"type": "integer", "minimum": 1, "description": "Frames it holds."},
        "segment_url": {"type": "string", "description": "Its HLS segment (`get_stream_segment`)."},
        "playlist_url": {"type": "string", "description": "The job's live HLS playlist."},
        "preview_url": {"type": "string", "description": "The finished chunks so far as one MP4."},
        "thumbnail_url": {"type": "string", "description": "The first rendered frame (JPEG)."},
    },
}
CHUNK_EXAMPLE: Final[dict[str, Any]] = {
    "index": 0,
    "start_frame": 0,
    "stop_frame": 50,
    "frames": 50,
    "segment_url": "https://parla.example.com/v1/videos/vid_abcdefghijk234567mnp/stream/0.ts",
    "playlist_url": "https://parla.example.com/v1/videos/vid_abcdefghijk234567mnp/stream.m3u8",
    "preview_url": "https://parla.example.com/v1/videos/vid_abcdefghijk234567mnp/preview.mp4",
    "thumbnail_url": "https://parla.example.com/v1/videos/vid_abcdefghijk234567mnp/thumbnail.jpg",
}
_JOB_REF: Final = "#/components/schemas/Job"


def _webhook_data(event: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The envelope's ``data``: its schema and example (the job; plus ``chunk`` for ``video.chunk``)."""
    job = {k: v for k, v in JOB_EXAMPLE.items() if k != "webhooks"}
    description = "The job, as `GET /v1/videos/{id}` shows it (without `webhooks`)."
    if event != EVENT_CHUNK:
        return {"$ref": _JOB_REF, "description": description}, job
    running = {
        **job,
        "status": "running",
        "finished_at": None,
        "result": None,
        "progress": {**job["progress"], "chunks_done": 1, "frames_done": 50, "eta_s": 3.2},
    }
    schema = {
        "description": description + " With `chunk`: the chunk just stored.",
        "allOf": [
            {"$ref": _JOB_REF},
            {
                "type": "object",
                "required": ["chunk"],
                "properties": {"chunk": {"$ref": "#/components/schemas/WebhookChunk"}},
            },
        ],
    }
    return schema, {**running, "chunk": CHUNK_EXAMPLE}


def _webhooks() -> dict[str, Any]:
    headers = [
        (HEADER_ID, "The delivery's id, the same on every retry: use it to drop duplicates.", "msg_2b5c..."),
        (HEADER_TIMESTAMP, "Unix seconds of this attempt; refuse ones far from your clock.", "1764583209"),
        (
            HEADER_SIGNATURE,
            'Space-separated `v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{raw body}">`, '
            "one per signing secret (Standard Webhooks).",
            "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
        ),
    ]
    hooks: dict[str, Any] = {}
    for event in ALL_WEBHOOK_EVENTS:
        terminal = event in DEFAULT_WEBHOOK_EVENTS
        data_schema, data_example = _webhook_data(event)
        hooks[event] = {
            "post": {
                "operationId": f"webhook_{event.replace('.', '_')}",
                "summary": WEBHOOK_SUMMARIES[event],
                "description": (
                    "Sent to the job's `webhook_url` when subscribed (`webhook_events`; default: the "
                    "terminal events). "
                    + (
                        "Retried for about 16 hours until a 2xx; a 410 stops all of the job's deliveries."
                        if terminal
                        else "One attempt, never retried."
                    )
                    + (
                        " At most one per second per job (the others are not sent): do not count on "
                        "seeing every chunk; the playlist lists them all."
                        if event in STREAM_WEBHOOK_EVENTS
                        else ""
                    )
                ),
                "tags": ["webhooks"],
                "security": [],
                "parameters": [
                    {
                        "name": name,
                        "in": "header",
                        "required": True,
                        "description": description,
                        "schema": {"type": "string"},
                        "example": example,
                    }
                    for name, description, example in headers
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["type", "timestamp", "data"],
                                "properties": {
                                    "type": {"type": "string", "const": event},
                                    "timestamp": {
                                        "type": "string",
                                        "format": "date-time",
                                        "description": "When the event happened (the same on every retry).",
                                    },
                                    "data": data_schema,
                                },
                            },
                            "example": {
                                "type": event,
                                "timestamp": "2026-12-01T10:00:09.123456Z",
                                "data": data_example,
                            },
                        }
                    },
                },
                "responses": {
                    "2XX": {"description": "Received."},
                    "410": {"description": "Stop: no more deliveries to this URL for the job."},
                },
            }
        }
    return hooks


# --- the document ---------------------------------------------------------------------------------


def complete_openapi(schema: dict[str, Any], engine_names: list[str]) -> dict[str, Any]:
    """Add to FastAPI's document what it cannot derive (see the module's docstring); returns ``schema``."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    refs: list[dict[str, str]] = []
    for name in engine_names:
        spec = engine_spec(name)
        model_schema = spec.options.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(model_schema.pop("$defs", {}))
        model_schema["description"] = f"`engine_options` of engine `{name}`: {spec.summary}"
        schemas[spec.options.__name__] = model_schema
        ref = {"$ref": f"#/components/schemas/{spec.options.__name__}"}
        if ref not in refs:
            refs.append(ref)
    options = schemas["RenderOptions"]["properties"]
    listing = ", ".join(f"`{name}`: `{engine_spec(name).options.__name__}`" for name in engine_names)
    options["engine_options"] = {
        "type": "object",
        "additionalProperties": True,
        "description": options["engine_options"].get("description", "")
        + f" Its schema is the engine's options model ({listing}).",
    }
    schemas.update(_submit_schemas(schemas, engine_names, refs))
    schemas["ErrorCode"]["description"] = "Every error code:\n\n" + "\n".join(
        f"- `{code.value}`: {ERROR_CODE_DESCRIPTIONS[code]}" for code in ErrorCode
    )
    schemas["JobError"]["properties"]["code"]["description"] = (
        "Why the job failed or ended: one of `ErrorCode`'s values."
    )
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer <key>`.",
        }
    }
    schema["security"] = [{SECURITY_SCHEME: []}]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            responses = operation.get("responses", {})
            validation = responses.get("422", {}).get("content", {}).get("application/json", {})
            if validation.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]  # FastAPI's guess; the routes document their own 422s
            if not path.startswith("/v1/"):
                operation["security"] = []
    submit = schema["paths"]["/v1/videos"]["post"]
    submit["requestBody"] = copy.deepcopy(SUBMIT_REQUEST_BODY)
    if "warp" not in engine_names:  # the example names an engine that this deployment serves, or none
        example = submit["requestBody"]["content"]["application/json"]["examples"]["urls"]["value"]
        del example["engine"], example["engine_options"]
    schemas["WebhookChunk"] = WEBHOOK_CHUNK_SCHEMA
    schema["webhooks"] = _webhooks()
    schema["tags"] = [
        {"name": "videos", "description": "Submit, follow, list, cancel and download video jobs."},
        {"name": "engines", "description": "The engines this deployment serves and their options."},
        {"name": "health", "description": "Probes and metrics (no API key)."},
        {"name": "webhooks", "description": "Events Parla POSTs to a job's `webhook_url`."},
    ]
    return schema


def install_docs(app: FastAPI, openapi_url: str) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with their assets served from this process."""
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} API",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


PROBED_METHODS: Final = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str] | None:
    """The methods the routes at the request's path take (with ``OPTIONS``), or None for no such path.

    Each method is tried against the app's routes (``BaseRoute.matches``: a full match is a route
    at this path taking this method); mounted apps answer for themselves and are skipped.
    """
    routes = [route for route in app.router.routes if not isinstance(route, Mount)]
    methods = [
        method
        for method in PROBED_METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return sorted([*methods, "OPTIONS"]) if methods else None


def document_text(engine_names: list[str]) -> str:
    """The OpenAPI document of an API serving ``engine_names``, as docs/openapi.json holds it."""
    import json

    from service.app import routed_app

    return json.dumps(routed_app(engine_names).openapi(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    # docs/openapi.json: the document with every engine enabled, for generating clients offline.
    from models.registry import ENGINES

    print(document_text(list(ENGINES)), end="")
