"""Records built past the dataclass's ``__init__``, and types checked once."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from pgactors import record
from pgactors.errors import InvalidInput
from pgactors.record import Record, check_type, new_record

NOW = datetime(2026, 12, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    "values",
    [
        ("T", "a", {"n": 1}, 3, NOW, NOW, None, None, None),
        ("T", "b", None, 1, NOW, NOW, b"\x00\x01", "proto:T", NOW),
    ],
)
def test_new_record_is_the_record_the_constructor_makes(values: tuple[object, ...]) -> None:
    built = new_record(*values)  # type: ignore[arg-type]
    made = Record(*values)  # type: ignore[arg-type]
    assert built == made
    assert repr(built) == repr(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.version = 9  # type: ignore[misc]


def test_new_record_sets_every_field() -> None:
    # A field added to Record must be added to new_record too.
    assert [f.name for f in dataclasses.fields(Record)] == [
        "type",
        "id",
        "data",
        "version",
        "created_at",
        "updated_at",
        "payload",
        "manifest",
        "expires_at",
    ]


def test_checked_types_are_remembered_and_bad_ones_still_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(record, "_VALID_TYPES", set())
    assert check_type("Player") == "Player"
    assert "Player" in record._VALID_TYPES
    assert check_type("Player") == "Player"
    for bad in ["", "1abc", "a b", "x" * 256, None, 5, ["Player"]]:
        with pytest.raises(InvalidInput, match="invalid type"):
            check_type(bad)
    assert {"Player"} == record._VALID_TYPES


def test_remembered_types_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "_VALID_TYPES", set())
    for n in range(record.MAX_VALID_TYPES + 50):
        assert check_type(f"T{n}") == f"T{n}"
    assert len(record._VALID_TYPES) == record.MAX_VALID_TYPES
    assert check_type("Later") == "Later"  # still checked, just not remembered
    with pytest.raises(InvalidInput):
        check_type("not valid")
