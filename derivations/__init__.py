r"""Machine-checked derivations of the DDPM/DDIM equations (issue 11 §1).

Each derivation (:class:`Derivation`) is a chain of steps; :func:`check` checks every step with sympy
and, where sympy cannot decide, with mpmath at random high-precision points (and says so). One
module per topic, each reading like the paper it follows:

* :mod:`.forward` — q(x_t|x_0) from the chain (Ho et al. eq. 4);
* :mod:`.posterior` — q(x_{t−1}|x_t,x_0) by completing the square, and the ε-form of μ̃ (eqs. 6–7, 11);
* :mod:`.likelihood` — the Gaussian KL, the L_t weight (eq. 12), the VLB decomposition (eq. 5);
* :mod:`.ddim` — marginal matching (Lemma 1), η = 1 is DDPM (eq. 16), the ODE (eqs. 13–14);
* :mod:`.parameterisations` — the v identities (Salimans & Ho 2022);
* :mod:`.schedules` — the cosine schedule and the reference's rewrite; zero terminal SNR (Lin et al.);
* :mod:`.guidance` — classifier guidance (Dhariwal & Nichol §4) and classifier-free guidance (eq. 6).

``ddspec derive`` (:func:`cli_main`, also ``python -m ddspec.derivations``) prints ✓ or ✗ per step;
:func:`render_markdown` generates docs/derivations/.
"""

from __future__ import annotations

from .cli import cli_main, format_result
from .core import (
    NUMERIC_DPS,
    NUMERIC_POINTS,
    NUMERIC_RTOL,
    Derivation,
    DerivationResult,
    Step,
    StepResult,
    Variable,
    check,
    variable,
    with_step_replaced,
)
from .registry import DERIVATIONS, TOPICS, get
from .render import render_markdown, write_docs

__all__ = [
    "NUMERIC_DPS",
    "NUMERIC_POINTS",
    "NUMERIC_RTOL",
    "Derivation",
    "DerivationResult",
    "Step",
    "StepResult",
    "Variable",
    "DERIVATIONS",
    "TOPICS",
    "check",
    "cli_main",
    "format_result",
    "get",
    "render_markdown",
    "variable",
    "with_step_replaced",
    "write_docs",
]
