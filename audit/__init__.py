r"""ddspec.audit: a formula checker for DDPM/DDIM quantities, with an errata register.

* :func:`check_formula` compares a formula (a sympy string over a fixed vocabulary, or a numpy
  callable) with the reference quantity at every index of the standard schedules, symbolically where
  sympy can decide, and names the registered erratum it equals (:class:`FormulaVerdict`).
* :data:`QUANTITIES`: the checkable quantities, each bound to :mod:`ddspec.reference` functions.
* :data:`ERRATA`: the register of common mistakes; :func:`render_markdown` renders docs/errata.md,
  including the audit of the source documents.
* :func:`cli_main`: ``ddspec formula "EXPR" --quantity NAME``.

The vocabulary is documented in :mod:`ddspec.audit.formula` and docs/errata.md. This package imports
ddspec.reference, sympy, numpy and mpmath only (never torch, never ddspec.conformance).
"""

from __future__ import annotations

from .checker import FormulaVerdict, check_formula
from .cli import cli_main
from .errata import ERRATA, SEED_FORMULAS, Erratum, SeedFormula, render_markdown
from .formula import FUNCTION_NAMES, SYMBOL_NAMES, parse_formula
from .quantities import DEFAULT_ETAS, DEFAULT_SCHEDULES, QUANTITIES, Point, Quantity

__all__ = [
    "check_formula",
    "FormulaVerdict",
    "Point",
    "Quantity",
    "QUANTITIES",
    "DEFAULT_SCHEDULES",
    "DEFAULT_ETAS",
    "ERRATA",
    "Erratum",
    "SEED_FORMULAS",
    "SeedFormula",
    "render_markdown",
    "parse_formula",
    "SYMBOL_NAMES",
    "FUNCTION_NAMES",
    "cli_main",
]
