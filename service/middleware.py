"""ASGI middleware: cap the request head's and body's sizes, and pauses while a body is sent."""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import ParlaError, PayloadTooLarge


class RequestTimeout(ParlaError):
    """The client stopped sending its request body (a slow or stalled client): 408."""

    code = "request_timeout"
    status_code = 408

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class BodySizeLimit:
    """Answer 413 when the body is too large, 408 when the client pauses too long while sending it.

    ``Content-Length`` is checked before anything reads the body; streamed bytes are counted when
    there is none. The pause limit applies only until the body is complete: afterwards ``receive``
    only waits for the client to disconnect (a long download), which must not time out.

    Args:
        app: the wrapped application.
        max_bytes: largest accepted body.
        idle_timeout_s: longest wait for the next part of an unfinished body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, idle_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _reject(send, self.max_bytes)
            return
        received = 0
        body_complete = False

        async def guarded_receive() -> Message:
            nonlocal received, body_complete
            if body_complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle_timeout_s)
            except TimeoutError:
                raise RequestTimeout(
                    f"no part of the request body arrived for {self.idle_timeout_s:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(f"request body is larger than {self.max_bytes} bytes")
                body_complete = not message.get("more_body", False)
            else:
                body_complete = True  # http.disconnect: nothing more will come
            return message

        await self.app(scope, guarded_receive, send)


class HeadSizeLimit:
    """Answer 431 when the request line + headers are larger than ``max_bytes``.

    The HTTP server bounds what it buffers of an incomplete head (``h11_max_incomplete_event_size``),
    but a head that arrives in one read is parsed whatever its size; this counts the parsed head.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or scope["path"]) + len(scope.get("query_string", b""))
            size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])  # ": ", CRLF
            if size > self.max_bytes:
                message = f"the request line and headers are larger than {self.max_bytes} bytes"
                await _send_error(send, 431, "request_header_too_large", message, close=True)
                return
        await self.app(scope, receive, send)


async def _reject(send: Send, max_bytes: int) -> None:
    await _send_error(send, 413, "payload_too_large", f"request body is larger than {max_bytes} bytes")


async def _send_error(send: Send, status: int, code: str, message: str, close: bool = False) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
