"""Reading a submission: multipart files or JSON URLs, options, and the checks run before any GPU time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import anyio
import httpx
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from core.errors import InvalidInput
from core.jobs import MAX_METADATA_DEPTH, RenderOptions
from core.jsonsafe import MAX_BODY_DEPTH, check_depth, check_text, loads_bounded
from core.netguard import BlockedAddress, UnsafeURL, check_url, guarded_async_client

FILE_FIELDS = ("image", "audio", "driving_video")
JSON_LIST_FIELDS = ("webhook_events", "outputs")
JSON_OBJECT_FIELDS = ("metadata", "engine_options")

logger = logging.getLogger(__name__)


@dataclass
class Submission:
    """The raw parts of one submission, before decoding."""

    options: RenderOptions
    image: bytes
    audio: bytes
    driving_video: bytes | None = None

    def request_hash(self) -> str:
        """Fingerprint of the request, to tell an idempotent retry from a different request."""
        digest = hashlib.sha256()
        digest.update(
            self.options.model_dump_json(exclude={"seed"} if self.options.seed is None else set()).encode()
        )
        for part in (self.image, self.audio, self.driving_video or b""):
            digest.update(hashlib.sha256(part).digest())
        return digest.hexdigest()


def parse_options(raw: dict[str, Any]) -> RenderOptions:
    """Validate submitted render options; every problem is a 422 ``invalid_params`` naming the field.

    Besides ``RenderOptions``' own checks, a submission's ``metadata`` must be an object when given
    (``null`` is refused; omit it instead) nested at most ``MAX_METADATA_DEPTH`` levels. These rules
    apply to new submissions only, so records stored before them stay readable.
    """
    if "metadata" in raw:
        metadata = raw["metadata"]
        if not isinstance(metadata, dict):
            raise InvalidInput("metadata: must be a JSON object (omit it for none)", code="invalid_params")
        try:
            check_depth(metadata, MAX_METADATA_DEPTH, "metadata")
        except ValueError as exc:
            raise InvalidInput(str(exc), code="invalid_params") from None
    try:
        return RenderOptions.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidInput(problems, code="invalid_params") from None


async def _read_upload(upload: UploadFile, name: str, max_bytes: int) -> bytes:
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidInput(
            f"{name} is larger than {max_bytes} bytes", code=f"{name}_too_large", status_code=413
        )
    return data


async def submission_from_form(form: FormData, max_bytes: dict[str, int]) -> Submission:
    """Multipart: ``image`` and ``audio`` files (``driving_video`` optional) plus option fields."""
    files: dict[str, bytes] = {}
    raw: dict[str, Any] = {}
    for key, value in form.multi_items():
        # A declared charset (e.g. utf-7) can decode a field into lone surrogates: refuse them
        # before any name or value is stored or echoed in an error message.
        _check_text(key, "a field name")
        if key in FILE_FIELDS:
            if not isinstance(value, UploadFile):
                raise InvalidInput(f"`{key}` must be a file upload", code="invalid_request")
            files[key] = await _read_upload(value, key, max_bytes[key])
            continue
        if isinstance(value, UploadFile):
            raise InvalidInput(f"unexpected file field `{key}`", code="invalid_request")
        _check_text(value, f"`{key}`")
        if key in JSON_LIST_FIELDS:
            raw.setdefault(key, []).extend(_json_or_csv(key, value))
        elif key in JSON_OBJECT_FIELDS:
            raw[key] = _json_field(key, value)
        else:
            raw[key] = value
    for required in ("image", "audio"):
        if required not in files:
            raise InvalidInput(f"the `{required}` file is missing", code=f"missing_{required}")
    return Submission(parse_options(raw), files["image"], files["audio"], files.get("driving_video"))


async def submission_from_json(
    body: Any,
    max_bytes: dict[str, int],
    fetch_timeout_s: float,
    client: httpx.AsyncClient | None = None,
    *,
    allow_private_networks: bool = False,
) -> Submission:
    """JSON: ``image_url`` and ``audio_url`` (https or ``data:`` URIs) plus options.

    ``client`` replaces the client built per fetch; it must come from
    ``core.netguard.guarded_async_client``, which holds the address guard.
    ``allow_private_networks`` is ``PARLA_FETCH_ALLOW_PRIVATE_NETWORKS``.
    """
    if not isinstance(body, dict):
        raise InvalidInput("the JSON body must be an object", code="invalid_request")
    raw = dict(body)
    urls = {name: raw.pop(f"{name}_url", None) for name in FILE_FIELDS}
    for required in ("image", "audio"):
        if not urls[required]:
            raise InvalidInput(f"`{required}_url` is missing", code=f"missing_{required}")
    options = parse_options(raw)
    parts: dict[str, bytes] = {}
    for name, url in urls.items():
        if url is not None:
            parts[name] = await fetch_url(
                name,
                url,
                max_bytes[name],
                fetch_timeout_s,
                client,
                allow_private_networks=allow_private_networks,
            )
    return Submission(options, parts["image"], parts["audio"], parts.get("driving_video"))


async def fetch_url(
    name: str,
    url: Any,
    max_bytes: int,
    timeout_s: float,
    client: httpx.AsyncClient | None = None,
    *,
    allow_private_networks: bool = False,
) -> bytes:
    """Bytes behind a ``data:`` URI or an ``https://`` URL (redirects not followed, size and time capped).

    Raises:
        InvalidInput: ``invalid_url`` (not https or data:, credentials in the URL, no host),
            ``<name>_too_large`` (413), or ``url_fetch_failed`` with one message whatever went
            wrong, so that the answer tells nothing about the network behind the server (the
            reason is logged).
    """
    if not isinstance(url, str):
        raise InvalidInput(f"`{name}_url` must be a string", code="invalid_url")
    if url.startswith("data:"):
        data = decode_data_uri(name, url)
    elif url.startswith("https://"):
        try:
            parsed = check_url(url, schemes={"https"})
        except UnsafeURL as exc:
            raise InvalidInput(f"`{name}_url` is refused: {exc}", code="invalid_url") from None
        data = await _download(name, parsed, max_bytes, timeout_s, client, allow_private_networks)
    else:
        raise InvalidInput(f"`{name}_url` must be an https:// URL or a data: URI", code="invalid_url")
    if len(data) > max_bytes:
        raise InvalidInput(
            f"{name} is larger than {max_bytes} bytes", code=f"{name}_too_large", status_code=413
        )
    return data


def decode_data_uri(name: str, uri: str) -> bytes:
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise InvalidInput(f"`{name}_url` is not a valid data: URI", code="invalid_url")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"`{name}_url` has invalid base64", code="invalid_url") from None
    return unquote_to_bytes(payload)


class _NotFetched(Exception):
    """The server answered, but not with the file (a status other than 200)."""


async def _download(
    name: str,
    url: httpx.URL,
    max_bytes: int,
    timeout_s: float,
    client: httpx.AsyncClient | None,
    allow_private_networks: bool,
) -> bytes:
    http = client or guarded_async_client(allow_private_networks=allow_private_networks, timeout_s=timeout_s)
    try:
        with anyio.fail_after(timeout_s):  # the whole download: a slow drip must not hold the request
            return await _read_capped(http, name, url, max_bytes)
    except (httpx.HTTPError, BlockedAddress, TimeoutError, _NotFetched) as exc:
        # The host only: the path or query may carry a token.
        logger.warning("could not fetch %s_url from %s: %s: %s", name, url.host, type(exc).__name__, exc)
        raise InvalidInput(f"could not fetch `{name}_url`", code="url_fetch_failed") from None
    finally:
        if client is None:
            await http.aclose()


async def _read_capped(http: httpx.AsyncClient, name: str, url: httpx.URL, max_bytes: int) -> bytes:
    async with http.stream("GET", url, follow_redirects=False) as response:
        if response.status_code != 200:
            raise _NotFetched(f"answered HTTP {response.status_code}")
        received = bytearray()
        async for block in response.aiter_bytes():
            received.extend(block)
            if len(received) > max_bytes:
                raise InvalidInput(
                    f"{name} is larger than {max_bytes} bytes", code=f"{name}_too_large", status_code=413
                )
        return bytes(received)


def _check_text(value: Any, name: str) -> None:
    """Lone surrogates or NUL anywhere in the request: its text is broken, a 422 ``invalid_request``."""
    try:
        check_text(value, name)
    except ValueError as exc:
        raise InvalidInput(str(exc), code="invalid_request") from None


def _json_field(key: str, value: str) -> Any:
    """A form field holding JSON, parsed with the same bounds as a JSON body."""
    max_depth = MAX_METADATA_DEPTH if key in JSON_OBJECT_FIELDS else MAX_BODY_DEPTH
    try:
        parsed = loads_bounded(value, max_depth)
    except json.JSONDecodeError:
        raise InvalidInput(f"`{key}` must be JSON", code="invalid_params") from None
    except ValueError as exc:  # too deep, NaN, out-of-range numbers
        raise InvalidInput(f"`{key}`: {exc}", code="invalid_params") from None
    _check_text(parsed, key)
    return parsed


def _json_or_csv(key: str, value: str) -> list[Any]:
    text = value.strip()
    if text.startswith("["):
        parsed = _json_field(key, text)
        return parsed if isinstance(parsed, list) else [parsed]
    return [part.strip() for part in text.split(",") if part.strip()]
