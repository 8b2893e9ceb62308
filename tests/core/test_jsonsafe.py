"""Bounded JSON parsing and text checks (core/jsonsafe.py)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from core.jsonsafe import (
    MAX_BODY_DEPTH,
    UnsafeJSON,
    check_depth,
    check_text,
    loads_bounded,
    nesting_depth,
    value_depth,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """JSON values whose strings are full of brackets, quotes and backslashes."""
    roll = rng.random()
    if depth > 6 or roll < 0.3:
        return rng.choice(['a"[{', "\\", "\\\\]", 1, None, "]]}", "é", '\\"', 2.5])
    if roll < 0.65:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ['"k', "[", '\\"{', "x\\\\", "}"]
    return {rng.choice(keys) + str(i): random_value(rng, depth + 1) for i in range(rng.randint(0, 3))}


def test_nesting_depth_matches_the_parsed_depth_across_chunk_boundaries() -> None:
    rng = random.Random(7)
    for _ in range(100):
        value = random_value(rng)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        for chunk_bytes in (1, 2, 5, 1 << 20):
            assert nesting_depth(text, chunk_bytes=chunk_bytes) == value_depth(value), (text, chunk_bytes)


def test_nesting_depth_does_not_depend_on_the_chunk_size_even_for_garbage() -> None:
    rng = random.Random(3)
    for _ in range(150):
        text = "".join(rng.choice('[]{}"\\ax,') for _ in range(rng.randint(0, 40))).encode()
        assert len({nesting_depth(text, chunk_bytes=size) for size in (1, 2, 3, 7, 1 << 20)}) == 1, text


def test_deep_nesting_is_refused_before_the_parser_recurses() -> None:
    for text in ("[" * 100_000, "[" * 100_000 + "]" * 100_000, '{"metadata": ' + "[" * 100_000):
        with pytest.raises(UnsafeJSON, match="deeper than 32"):
            loads_bounded(text.encode())
    assert loads_bounded(json.dumps(nested(MAX_BODY_DEPTH))) == nested(MAX_BODY_DEPTH)
    with pytest.raises(UnsafeJSON):
        loads_bounded(json.dumps(nested(MAX_BODY_DEPTH + 1)))


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"s": "[" * 1000, "t": '\\"' + "{" * 1000}).encode()
    assert nesting_depth(text) == 1
    assert loads_bounded(text, max_depth=1)["s"] == "[" * 1000


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe[1]", b'{"a": NaN}', b"[Infinity]", b"[-Infinity]", b"[1e999]", b"{not json", b""],
)
def test_not_json_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        loads_bounded(data)


def test_value_depth_is_iterative() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    assert value_depth(deep) == 100_000  # a recursive walk would overflow the stack
    assert (value_depth(1), value_depth({}), value_depth({"a": [1, {}]})) == (0, 1, 3)
    check_depth({"a": {"b": 1}}, 2)
    with pytest.raises(UnsafeJSON, match="metadata is nested deeper than 1"):
        check_depth({"a": {"b": 1}}, 1, "metadata")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("\ud800", "a string"),
        ({"a": ["ok", "x\udfff"]}, "metadata.a[1]"),
        ({"a": {"\ud800": 1}}, "metadata.a: a key"),
        ({"a": "nul\x00"}, "metadata.a"),
    ],
)
def test_lone_surrogates_and_nul_are_refused_without_echoing_them(value: Any, where: str) -> None:
    with pytest.raises(UnsafeJSON) as caught:
        check_text(value, "metadata" if isinstance(value, dict) else "")
    message = str(caught.value)
    assert message.startswith(where), message
    message.encode("utf-8")  # the message itself is storable and sendable


def test_valid_text_passes() -> None:
    value = loads_bounded(b'{"emoji": "\\ud83d\\ude00", "accent": "\xc3\xa9", "list": [1, null, true]}')
    check_text(value)
    assert value["emoji"] == "\U0001f600" and value["accent"] == "é"
