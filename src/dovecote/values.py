"""Value classes for the hot path: slotted dataclasses that mypy holds frozen.

``@dataclass(frozen=True)`` sets every field through ``object.__setattr__``: about 1 us for a
Message or a STOMP Frame, once per message sent, most of what building one costs. A
``value_class`` is a plain slotted dataclass at run time and a frozen one to the type checker
(``dataclass_transform(frozen_default=True)``): mypy --strict runs on src/ and refuses any
assignment to a field, which is where immutability is kept. Nothing hashes these values (a
Message and a Frame each hold a dict).

This module imports only the standard library, so that the core and the sans-I/O protocols
may both use it (an import-linter contract keeps it so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

_Class = TypeVar("_Class")


@dataclass_transform(frozen_default=True)
def value_class(cls: type[_Class]) -> type[_Class]:
    """Make ``cls`` a slotted dataclass, frozen to the type checker (see the module)."""
    return dataclass(slots=True)(cls)
