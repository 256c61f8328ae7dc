"""Persistent pydantic models: ``PersistentModel``, the pydantic twin of ``PersistentObject``.

A module of its own, imported on first use of ``pgactors.PersistentModel``, so that
importing pgactors (and every ``pgactors`` command) does not pay for importing pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from .objects import Bookkeeping, Persistent, Upcaster

try:
    import pydantic

    _HAVE_PYDANTIC = True
except ImportError:  # pragma: no cover - pydantic is optional
    _HAVE_PYDANTIC = False

if _HAVE_PYDANTIC:

    class PersistentModel(Persistent, pydantic.BaseModel):
        """Base for pydantic v2 models stored by ``(type_name, id)``; ``id`` is a field.

        ``to_data`` is ``model_dump(mode="json", exclude={"id"})``, ``from_data`` is
        ``model_validate``. Class attributes as for :class:`PersistentObject`.
        """

        id: str
        type_name: ClassVar[str]
        state_version: ClassVar[int] = 1
        upcasters: ClassVar[Mapping[int, Upcaster]] = {}
        _pgactors: Bookkeeping = pydantic.PrivateAttr(default_factory=Bookkeeping)

        def to_data(self) -> dict[str, Any]:
            """``model_dump(mode="json", exclude={"id"})``."""
            return self.model_dump(mode="json", exclude={"id"})

        @classmethod
        def from_data(cls, id: str, data: dict[str, Any]) -> Self:
            """``model_validate`` of the stored dict with the id."""
            return cls.model_validate({**data, "id": id})

        @classmethod
        def known_keys(cls) -> frozenset[str]:
            """The field names except ``id``."""
            return frozenset(name for name in cls.model_fields if name != "id")

        def _pgactors_attach(self, bookkeeping: Bookkeeping) -> None:
            self._pgactors = bookkeeping

else:  # pragma: no cover - pydantic is optional

    class PersistentModel:  # type: ignore[no-redef]
        """Needs pydantic v2 (``pip install pydantic``)."""

        def __init_subclass__(cls, **kwargs: Any) -> None:
            raise ImportError("pgactors.PersistentModel needs pydantic v2: pip install pydantic")


__all__ = ["PersistentModel"]
