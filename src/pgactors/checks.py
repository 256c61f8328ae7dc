"""Checks of argument values shared by the modules that validate input.

Each caller raises its own error with its own message; this module only says whether
a value follows the rule, so the rule is written once.
"""

from __future__ import annotations

from typing import TypeGuard


def int_in_range(
    value: object, minimum: int | None = None, maximum: int | None = None
) -> TypeGuard[int]:
    """True if ``value`` is an int (a bool is not) with ``minimum <= value <= maximum``.

    A bound given as None is not checked.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


__all__ = ["int_in_range"]
