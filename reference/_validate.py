"""Deprecated private alias of :mod:`ddspec.reference.validation` (kept for existing importers).

New code imports :mod:`ddspec.reference.validation`. This module re-exports the same objects, so
``SingularError`` raised by one is caught as the other.
"""

from __future__ import annotations

from .validation import (
    SingularError,
    _first_bad,
    _show,
    as_array,
    as_betas,
    as_int,
    as_scalar,
    as_timestep,
    as_timesteps,
    check_finite_result,
    check_same_shape,
    fail,
)

__all__ = [
    "SingularError",
    "fail",
    "as_array",
    "as_betas",
    "as_timestep",
    "as_timesteps",
    "as_int",
    "as_scalar",
    "check_same_shape",
    "check_finite_result",
]

_PRIVATE = (_first_bad, _show)  # re-exported for callers of the old private helpers
