"""Input validation shared by every reference function (public: the harness validates with the same rules).

Every public function of :mod:`ddspec.reference` validates its inputs through these helpers, so that
bad input always raises a :class:`ValueError` that names the argument and shows the bad value, and a
singular equation raises :class:`SingularError` (a :class:`ValueError` subclass) instead of returning
``inf`` or ``NaN``.

This module is public so that code outside :mod:`ddspec.reference` (the harness, adapters) can give
the same errors without importing a private name; ``ddspec.reference._validate`` remains as an alias
for existing callers.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

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


class SingularError(ValueError):
    """An equation is singular at the requested input (for example ε → x̂_0 at ᾱ = 0)."""


def _show(value: Any) -> str:
    """A short, readable rendering of a bad value for error messages."""
    try:
        arr = np.asarray(value) if not isinstance(value, (str, bytes)) else None
    except Exception:  # ragged sequences and the like: numpy cannot make an array of them
        arr = None
    if arr is not None and arr.ndim > 0:
        flat = arr.ravel()
        head = ", ".join(repr(v.item()) if hasattr(v, "item") else repr(v) for v in flat[:6])
        more = ", ..." if flat.size > 6 else ""
        return f"array(shape={arr.shape}, dtype={arr.dtype}, [{head}{more}])"
    return repr(value)


def fail(name: str, value: Any, why: str, *, singular: bool = False) -> None:
    """Raise the standard error: ``ValueError("<name>=<value>: <why>")``."""
    cls = SingularError if singular else ValueError
    raise cls(f"{name}={_show(value)}: {why}")


def _first_bad(arr: NDArray[Any], bad: NDArray[np.bool_]) -> str:
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    where = idx[0] if len(idx) == 1 else idx
    return f"at index {where} (value {arr[idx]!r})"


def as_array(x: ArrayLike, name: str, *, allow_empty: bool = False) -> NDArray[np.float64]:
    """Convert ``x`` to a float64 array; reject non-numeric, empty (unless allowed) and non-finite input."""
    if isinstance(x, (str, bytes)) or x is None:
        fail(name, x, "expected a real number or array of real numbers")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged sequences and the like
        fail(name, x, f"cannot be converted to an array ({exc})")
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        fail(name, x, f"expected real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.size == 0 and not allow_empty:
        fail(name, x, "must not be empty")
    bad = ~np.isfinite(arr)
    if bad.any():
        fail(name, x, f"must be finite; non-finite {_first_bad(arr, bad)}")
    return arr


def as_scalar(
    x: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real scalar, optionally inside ``[low, high]`` (ends open if asked)."""
    if isinstance(x, bool) or not isinstance(x, (numbers.Real, np.floating, np.integer)):
        if not (isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "iuf"):
            fail(name, x, "expected a real scalar")
    v = float(x)
    if not np.isfinite(v):
        fail(name, x, "must be finite")
    if low is not None and (v < low or (low_open and v == low)):
        fail(name, x, f"must be {'>' if low_open else '>='} {low!r}")
    if high is not None and (v > high or (high_open and v == high)):
        fail(name, x, f"must be {'<' if high_open else '<='} {high!r}")
    return v


def as_int(x: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (Python or numpy, not bool, not float) inside ``[low, high]``."""
    if isinstance(x, bool) or not isinstance(x, (numbers.Integral, np.integer)):
        fail(name, x, "expected an integer")
    v = int(x)
    if not -(2**63) <= v < 2**63:
        fail(name, x, "is beyond the int64 range (indices and sizes are int64 arrays)")
    if low is not None and v < low:
        fail(name, x, f"must be >= {low}")
    if high is not None and v > high:
        fail(name, x, f"must be <= {high}")
    return v


def as_betas(betas: ArrayLike, name: str = "betas") -> NDArray[np.float64]:
    """Validate a noise schedule: a 1-D float64 array with ``0 < β_i < 1``.

    The last β may equal 1 (``ᾱ_{T-1} = 0``): zero-terminal-SNR schedules and the ``jsd`` schedule
    end there. Any other β of 1 would make every later ᾱ zero and is rejected.
    """
    arr = as_array(betas, name)
    if arr.ndim != 1:
        fail(name, betas, f"must be 1-D, got shape {arr.shape}")
    bad = (arr <= 0.0) | (arr > 1.0)
    bad[:-1] |= arr[:-1] >= 1.0
    if bad.any():
        fail(name, betas, f"every β must lie in (0, 1) (the last may be 1); bad {_first_bad(arr, bad)}")
    return arr


def as_timestep(t: Any, num_timesteps: int, name: str = "t", *, allow_data: bool = False) -> int:
    """A 0-based timestep index in ``[0, T-1]``; ``-1`` (the clean data x_0, ᾱ = 1) if ``allow_data``."""
    low = -1 if allow_data else 0
    return as_int(t, name, low=low, high=num_timesteps - 1)


def as_timesteps(
    t: ArrayLike, num_timesteps: int, name: str = "t", *, allow_data: bool = False
) -> NDArray[np.int64]:
    """An array of 0-based timestep indices (see :func:`as_timestep`), any shape."""
    arr = np.asarray(t)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            fail(name, t, f"expected integer timestep indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    low = -1 if allow_data else 0
    bad = (arr < low) | (arr > num_timesteps - 1)
    if bad.any():
        fail(name, t, f"timestep index out of range [{low}, {num_timesteps - 1}] {_first_bad(arr, bad)}")
    return arr


def check_same_shape(**arrays: NDArray[Any]) -> None:
    """Require that all named arrays have exactly the same shape."""
    items = list(arrays.items())
    name0, a0 = items[0]
    for name, a in items[1:]:
        if np.shape(a) != np.shape(a0):
            fail(name, a, f"shape {np.shape(a)} does not match {name0}'s shape {np.shape(a0)}")


def check_finite_result(x: NDArray[Any], what: str, cause: str) -> NDArray[Any]:
    """Guard against a silent NaN/inf in a result; raise a :class:`SingularError` that says why."""
    arr = np.asarray(x)
    if not np.all(np.isfinite(arr)):
        bad = ~np.isfinite(arr)
        raise SingularError(f"{what} is not finite {_first_bad(arr, bad) if arr.ndim else ''}: {cause}")
    return x
