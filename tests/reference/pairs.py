"""The function ↔ twin pairing of the tests, taken from the registry (reference/registry.py), not spelled per file.

``twin_of("interpolation.slerp")`` is the mpmath twin that the registry pairs with
``ddspec.reference.interpolation.slerp``; a test that measures a function against its twin with its
own metric (elementwise term magnitudes, every index of a schedule) looks the twin up here, so that
``ddspec audit``, docs/traceability.md and the unit tests use one pairing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ddspec.reference import registry


def twin_of(function: str) -> Callable[..., Any]:
    """The twin callable the registry names for ``function`` (``"module.name"``); an error if it names none."""
    twin = registry.entry(function).twin
    if twin is None:
        raise LookupError(f"function={function!r}: the registry names no twin for it")
    return registry.resolve(twin, twin=True)
