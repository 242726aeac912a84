r"""mpmath twins of the reference: the same equations, written independently, at arbitrary precision.

Each module here mirrors a module of :mod:`ddspec.reference` and is written from the formulas, not by
running the float64 code on mpf numbers, so that a shared mistake cannot hide. Twins take float64
inputs as exact values (``mpmath.mpf(float)`` is exact) and return ``mpmath.mpf`` values (or lists).

:func:`ulp_error` measures a float64 result against its twin in units in the last place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mpmath
import numpy as np
from numpy.typing import NDArray

__all__ = ["DEFAULT_DPS", "ulp_error", "mpf_list"]

DEFAULT_DPS = 50


def mpf_list(values: Iterable[Any]) -> list[mpmath.mpf]:
    """Exact conversion of float64 values to mpf."""
    return [mpmath.mpf(float(v)) for v in np.asarray(values, dtype=np.float64).ravel()]


def ulp_error(approx: Any, exact: Iterable[Any]) -> NDArray[np.float64]:
    r"""Error of float64 ``approx`` against ``exact`` (mpf or numbers), in ULP of the exact value.

    .. math:: \mathrm{err}_i = \frac{|\hat y_i - y_i|}{\mathrm{ulp}(y_i)},\qquad \mathrm{ulp}(y) = \texttt{np.spacing}(|\mathrm{fl}(y)|)

    The difference is taken in mpmath, so it is exact. Where the exact value is 0, the error is 0 if
    ``approx`` is 0 and ``inf`` otherwise. The exact value's ULP is that of its nearest double.
    """
    a = np.asarray(approx, dtype=np.float64).ravel()
    ex = list(exact) if not isinstance(exact, mpmath.mpf) else [exact]
    if len(ex) != a.size:
        raise ValueError(f"exact: has {len(ex)} values, approx has {a.size}")
    out = np.empty(a.size)
    with mpmath.workdps(60):
        for i, (x, y) in enumerate(zip(a.tolist(), ex)):
            y = mpmath.mpf(y)
            if y == 0:
                out[i] = 0.0 if x == 0.0 else np.inf
                continue
            ulp = float(np.spacing(abs(float(y))))
            out[i] = float(abs(mpmath.mpf(x) - y) / ulp)
    return out
