"""Every derivation, by topic, in the order the docs and ``ddspec derive`` present them."""

from __future__ import annotations

from . import ddim, forward, guidance, likelihood, parameterisations, posterior, schedules
from .core import Derivation

__all__ = ["TOPICS", "DERIVATIONS", "get"]

TOPICS: tuple[tuple[str, str, tuple[Derivation, ...]], ...] = (
    ("forward", "The forward process", forward.DERIVATIONS),
    ("posterior", "The forward-process posterior", posterior.DERIVATIONS),
    ("likelihood", "The variational bound", likelihood.DERIVATIONS),
    ("ddim", "DDIM", ddim.DERIVATIONS),
    ("parameterisations", "Parameterisations: ε, x₀, v", parameterisations.DERIVATIONS),
    ("schedules", "Noise schedules", schedules.DERIVATIONS),
    ("guidance", "Guidance", guidance.DERIVATIONS),
)
"""(topic, heading, derivations) — one docs page per topic."""

DERIVATIONS: tuple[Derivation, ...] = tuple(d for _, _, group in TOPICS for d in group)

_BY_NAME = {d.name: d for d in DERIVATIONS}
if len(_BY_NAME) != len(DERIVATIONS):
    raise RuntimeError("two derivations share a name")
for _topic, _, _group in TOPICS:
    for _d in _group:
        if _d.topic != _topic:
            raise RuntimeError(f"derivation {_d.name!r} has topic {_d.topic!r} but is listed under {_topic!r}")


def get(name: str) -> Derivation:
    """The derivation called ``name``; ``KeyError`` naming it (and the known names) otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown derivation {name!r}; known: {', '.join(_BY_NAME)}") from None
