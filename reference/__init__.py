"""ddspec.reference: a slow, readable float64 NumPy statement of every DDPM/DDIM equation.

Conventions (0-based timestep index, ᾱ before the first step = 1, exact float64 inputs) are pinned in
``docs/conventions.md``. This package imports numpy, scipy and mpmath only: never torch, never the
harness, never code under test.
"""

from .validation import SingularError

__all__ = ["SingularError"]
