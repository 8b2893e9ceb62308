"""Untrusted JSON: parse it without deep recursion, and refuse text that cannot be stored or echoed.

Python's ``json`` module (and pydantic's parser) recurse once per nesting level: a body of 100k ``[``
overflows the stack, and a record nested deeper than pydantic's limit (about 200 levels) can be
written but never read back. Strings may also hold lone UTF-16 surrogates (``"\\ud800"``), which
are valid JSON escapes but cannot be encoded to UTF-8, so the job record and even an error
message that echoed them would fail. Everything here is iterative and linear in the input size.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

MAX_BODY_DEPTH = 32
"""Deepest nesting accepted in a request body (the options need 2 levels, metadata 8 more)."""

_SCAN_CHUNK = 1 << 20
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_DEPTH_STEP = np.zeros(256, dtype=np.int64)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1
_BAD_TEXT = re.compile("[\ud800-\udfff\x00]")


class UnsafeJSON(ValueError):
    """JSON that is not UTF-8, is nested too deeply, or holds text that cannot be stored."""


def nesting_depth(data: bytes, stop_above: int | None = None, chunk_bytes: int = _SCAN_CHUNK) -> int:
    """Deepest ``[``/``{`` nesting of UTF-8 JSON text, found without parsing it (``{}`` is 1, ``1`` is 0).

    Brackets inside strings do not count (a quote after an odd run of backslashes does not end a
    string). Vectorised over ``chunk_bytes`` chunks, so tens of megabytes take about a second and
    little memory; with ``stop_above`` it returns as soon as the depth passes that. For malformed JSON the number is
    meaningless but finite (the parser refuses such text anyway).
    """
    deepest = depth = 0
    backslash_run = 0  # backslashes just before the chunk (they may escape its first quote)
    in_string = 0
    for start in range(0, len(data), chunk_bytes):
        piece = data[start : start + chunk_bytes]
        has_brackets = any(bracket in piece for bracket in (b"[", b"{", b"]", b"}"))
        if not has_brackets and b"\\" not in piece and backslash_run % 2 == 0:  # e.g. inside a data: URI
            in_string = (in_string + piece.count(b'"')) % 2
            backslash_run = 0
            continue
        chunk = np.frombuffer(piece, dtype=np.uint8)
        index = np.arange(len(chunk), dtype=np.int64)
        last_other = np.maximum.accumulate(np.where(chunk == _BACKSLASH, -1, index))
        run_ending_here = np.where(last_other >= 0, index - last_other, index + 1 + backslash_run)
        run_before = np.concatenate(([backslash_run], run_ending_here[:-1]))
        quotes = (chunk == _QUOTE) & (run_before % 2 == 0)
        string_parity = (in_string + np.cumsum(quotes)) % 2  # 1: inside a string after this byte
        levels = depth + np.cumsum(_DEPTH_STEP[chunk] * (string_parity == 0))
        deepest = max(deepest, int(levels.max()))
        if stop_above is not None and deepest > stop_above:
            return deepest
        depth, backslash_run, in_string = int(levels[-1]), int(run_ending_here[-1]), int(string_parity[-1])
    return deepest


def _refuse_constant(name: str) -> Any:
    raise UnsafeJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: would be stored as inf and answered as null
        raise UnsafeJSON(f"the number {text[:20]} is out of range")
    return value


def loads_bounded(data: bytes | str, max_depth: int = MAX_BODY_DEPTH) -> Any:
    """Parse JSON, refusing non-UTF-8 bytes, nesting deeper than ``max_depth``, NaN and infinities.

    The depth is measured before the parser runs, so hostile nesting never reaches its recursion.

    Raises:
        UnsafeJSON: not UTF-8, too deep, or a non-finite number.
        json.JSONDecodeError: not JSON (both are ``ValueError``).
    """
    if isinstance(data, str):
        text, raw = data, data.encode("utf-8", "surrogatepass")
    else:
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeJSON("the JSON is not valid UTF-8") from None
    if nesting_depth(raw, stop_above=max_depth) > max_depth:
        raise UnsafeJSON(f"the JSON is nested deeper than {max_depth} levels")
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def value_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (``{}`` and ``[]`` are 1, a scalar 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_depth(value: Any, max_depth: int, name: str = "the value") -> None:
    """Raise ``UnsafeJSON`` when ``value`` is nested deeper than ``max_depth`` levels."""
    if value_depth(value) > max_depth:
        raise UnsafeJSON(f"{name} is nested deeper than {max_depth} levels")


def check_text(value: Any, name: str = "") -> None:
    """Refuse any string (object keys included) holding a lone surrogate or a NUL character.

    Lone surrogates cannot be encoded to UTF-8 (the job record, logs and any error message that
    echoed them would fail); NUL is cut short by C-string consumers (URLs, headers, logs).

    Args:
        value: a parsed JSON value (or a form field's string).
        name: where ``value`` came from, for the message (e.g. ``metadata``).

    Raises:
        UnsafeJSON: naming the path of the string (never echoing the string itself).
    """
    stack: list[tuple[Any, str]] = [(value, name)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _BAD_TEXT.search(item):
                raise UnsafeJSON(f"{path or 'a string'}: {_problem(item)}")
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _BAD_TEXT.search(key):
                    raise UnsafeJSON(f"{path or 'an object'}: a key {_problem(key)}")
                stack.append((child, f"{path}.{key}" if path else str(key)))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))


def _problem(text: str) -> str:
    if "\x00" in text:
        return "contains a NUL character"
    return "contains a lone UTF-16 surrogate (not valid Unicode text)"
