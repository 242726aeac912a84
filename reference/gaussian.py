r"""A diagonal Gaussian as a result type: :math:`\mathcal{N}(\mu, \sigma^2 I)`.

Forward-process marginals, posteriors and the DDIM family return one of these, so that callers get
the mean and the variance together, and can evaluate log-densities at points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .validation import as_array, check_finite_result, fail

__all__ = ["Gaussian"]


@dataclass(frozen=True)
class Gaussian:
    r"""A diagonal Gaussian :math:`\mathcal{N}(\mathrm{mean}, \mathrm{variance})`, elementwise.

    ``variance`` broadcasts against ``mean`` (a scalar variance is an isotropic Gaussian). A variance
    of 0 is a point mass: :meth:`log_prob` then refuses to evaluate a density.
    """

    mean: NDArray[np.float64]
    variance: NDArray[np.float64]

    def __post_init__(self) -> None:
        m = as_array(self.mean, "mean")
        v = as_array(self.variance, "variance")
        if np.any(v < 0):
            fail("variance", self.variance, "must be >= 0")
        try:
            np.broadcast_shapes(m.shape, v.shape)
        except ValueError:
            fail("variance", self.variance, f"shape {v.shape} does not broadcast with mean's shape {m.shape}")
        object.__setattr__(self, "mean", m)
        object.__setattr__(self, "variance", v)

    @property
    def std(self) -> NDArray[np.float64]:
        r"""Standard deviation :math:`\sqrt{\mathrm{variance}}`."""
        return np.sqrt(self.variance)

    def log_prob(self, x: ArrayLike) -> NDArray[np.float64]:
        r"""Elementwise log-density :math:`-\tfrac12\log(2\pi\sigma^2) - (x-\mu)^2/(2\sigma^2)`.

        Raises :class:`ValueError` naming ``variance`` where the variance is 0 (a point mass has no density).
        """
        xx = as_array(x, "x")
        if np.any(self.variance <= 0):
            fail("variance", self.variance, "log_prob needs a positive variance (this Gaussian is a point mass)")
        with np.errstate(over="ignore", invalid="ignore"):
            d = xx - self.mean
            out = -0.5 * np.log(2.0 * np.pi * self.variance) - 0.5 * d * d / self.variance
        return check_finite_result(out, "log_prob", "the log-density is below the float64 range (|x - mean| too large)")
