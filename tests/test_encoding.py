"""State data to JSON text: msgspec for plain JSON, ``json`` for everything else.

Both paths must accept and refuse the same data, with the same errors, and store the
same JSON values.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from enum import IntEnum
from typing import Any

import pytest

from pgactors import record
from pgactors.errors import InvalidInput
from pgactors.record import encode_data

LIMIT = 1_000_000


class Level(IntEnum):
    HIGH = 3


def _shared() -> dict[str, Any]:
    inner = [1, 2]
    return {"a": inner, "b": inner}


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _deep(levels: int) -> list[Any]:
    top: list[Any] = []
    current = top
    for _ in range(levels):
        current.append([])
        current = current[0]
    return top


PLAIN = [
    {"blob": "x" * 900, "n": 1},
    {"a": 1, "b": [1, 2.5, None, True, False, "é\n\x01\u2028"], "c": {"d": {}, "e": []}},
    {"i": -(2**63), "j": 2**64, "f": 1e300, "g": -0.0, "h": 5e-324},
    [],
    "text",
    7,
    None,
]

OTHER = [
    {"t": (1, 2)},  # a tuple: json writes a list
    OrderedDict(a=1),  # a dict subclass
    {"level": Level.HIGH},  # an int subclass
    _shared(),  # the same list twice (not a cycle)
    {"nan": math.nan},
    {"inf": [math.inf]},
    {1: "int key"},
    {"k": {None: 1}},
    {"b": b"bytes"},
    {"s": {1, 2}},
    {"surrogate": "\ud800"},
    {"nul": "a\x00b"},
    {"big": 10**5000},
    _cycle(),
    _deep(100_000),
    {"large": "x" * (LIMIT + 1)},
]


def _by_json(data: object, monkeypatch: pytest.MonkeyPatch) -> str | InvalidInput:
    with monkeypatch.context() as patch:
        patch.setattr(record, "_fast_text", lambda data: None)
        try:
            return encode_data(data, LIMIT)
        except InvalidInput as exc:
            return exc


@pytest.mark.parametrize("data", PLAIN, ids=range(len(PLAIN)))
def test_plain_json_is_encoded_by_msgspec_to_the_same_values(
    data: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _by_json(data, monkeypatch)
    assert isinstance(reference, str)

    def refuse(data: object) -> str:
        raise AssertionError("the json path was taken")

    monkeypatch.setattr(record._ENCODER, "encode", refuse)
    text = encode_data(data, LIMIT)
    assert json.loads(text) == json.loads(reference)
    assert " " not in text.replace("x" * 900, "")  # compact, like the json path


@pytest.mark.parametrize("data", OTHER, ids=range(len(OTHER)))
def test_anything_else_is_accepted_or_refused_as_by_json(
    data: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _by_json(data, monkeypatch)
    try:
        result: str | InvalidInput = encode_data(data, LIMIT)
    except InvalidInput as exc:
        result = exc
    if isinstance(reference, InvalidInput):
        assert isinstance(result, InvalidInput), result
        assert str(result) == str(reference)
    else:
        assert result == reference
