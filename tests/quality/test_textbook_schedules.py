r"""No false alarm on an honest table, and no pass for a table just outside the bound (issue 7, §2).

Each named schedule the harness supports is written here as any careful user would write it, in
float64 and in float32, every operation in the table's dtype: ``torch.linspace``, ``torch.sigmoid``,
``math.cos`` / ``torch.cos``, Algorithm 1 of Lin et al. 2023 for the zero-terminal-SNR rescale, and
ᾱ = ``torch.cumprod(1 − β)`` in the table's dtype. Wrapped as a hand-written DDIM sampler (the zoo's
:class:`~tests.quality.zoo.HandDDIM`, whose step uses the target's own ᾱ table), every honest table
must pass ``schedule.*`` with a margin (observed/tolerance ≤ :data:`HONEST_MAX_RATIO`), and the four
base schedules must pass the whole harness in the quick profile.

Each honest table has a mutant that must fail ``schedule.*`` with a margin (observed/tolerance ≥
:data:`MUTANT_MIN_RATIO`). The bounds applied are ``SAFETY`` = 4 times the first-order bounds of
``docs/tolerances.md`` (u = 2⁻⁵³ in float64, 2⁻²⁴ in float32); the mutants' sizes are derived from
them in each test's docstring. Neither margin is near 1, so no verdict depends on the CPU's vector
kernel (``ATEN_CPU_CAPABILITY=default`` / ``avx2`` / native give the same verdicts).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch

from ddspec.conformance.checks import ALL_CHECKS, schedule
from ddspec.conformance.context import CheckContext
from ddspec.conformance.results import CheckResult, Verdict
from ddspec.conformance.runner import run_checks

from .zoo import HandDDIM

T = 1000
#: An honest table must use at most this fraction of its tolerance (the bound is a worst case;
#: measured ≤ 0.12 for every table here).
HONEST_MAX_RATIO = 0.5
#: A mutant must exceed its tolerance by at least this factor.
MUTANT_MIN_RATIO = 2.0
DTYPES = {"float64": torch.float64, "float32": torch.float32}
SCHEDULE_NAMES = ("schedule.betas", "schedule.alphas_cumprod")


# -- textbook schedules, written plainly ------------------------------------------------------------


def linear(dtype: torch.dtype) -> torch.Tensor:
    """Ho et al. 2020, §4: β from 10⁻⁴ to 0.02, linearly."""
    return torch.linspace(1e-4, 0.02, T, dtype=dtype)


def scaled_linear(dtype: torch.dtype) -> torch.Tensor:
    """Rombach et al. 2022 (Stable Diffusion): linear in √β from √0.00085 to √0.012, squared."""
    return torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=dtype) ** 2


def sigmoid(dtype: torch.dtype) -> torch.Tensor:
    """diffusers' sigmoid schedule: σ(linspace(−6, 6, T))·(0.02 − 10⁻⁴) + 10⁻⁴."""
    return torch.sigmoid(torch.linspace(-6.0, 6.0, T, dtype=dtype)) * (0.02 - 1e-4) + 1e-4


def cosine_math(dtype: torch.dtype, s: float = 0.008) -> torch.Tensor:
    r"""Nichol & Dhariwal 2021, eq. 17, with ``math.cos`` (float64), then stored in ``dtype``.

    .. math:: \beta_i = \min\big(1 - f(i+1)/f(i),\ 0.999\big), \quad f(u) = \cos^2\!\Big(\frac{u/T + s}{1 + s}\cdot\frac{\pi}{2}\Big)
    """

    def f(i: int) -> float:
        return math.cos((i / T + s) / (1 + s) * math.pi / 2) ** 2

    return torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], dtype=dtype)


def cosine_torch(dtype: torch.dtype, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. 17, every operation in ``dtype`` (``torch.cos``)."""
    steps = torch.arange(T + 1, dtype=dtype)
    f = torch.cos((steps / T + s) / (1 + s) * math.pi / 2) ** 2
    return torch.clamp(1 - f[1:] / f[:-1], max=0.999)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    r"""Lin et al. 2023, Algorithm 1, in the dtype of ``betas``: shift √ᾱ so that √ᾱ_T = 0, keep √ᾱ_1.

    .. math:: r'_t = (r_t - r_T)\,\frac{r_1}{r_1 - r_T}, \qquad \beta'_t = 1 - \frac{r'^2_t}{r'^2_{t-1}}
    """
    alphas_bar_sqrt = torch.cumprod(1 - betas, dim=0).sqrt()
    first = alphas_bar_sqrt[0].clone()
    last = alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = alphas_bar_sqrt - last
    alphas_bar_sqrt = alphas_bar_sqrt * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


@dataclass(frozen=True)
class Textbook:
    """A textbook schedule: its builder and what a sampler using it declares."""

    name: str
    build: Callable[[torch.dtype], torch.Tensor]
    conventions: dict[str, Any]
    zero_snr: bool = False

    def betas(self, dtype: torch.dtype) -> torch.Tensor:
        b = self.build(dtype)
        return rescale_zero_terminal_snr(b) if self.zero_snr else b


_BASES = (
    Textbook("linear", linear, {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}),
    Textbook("scaled_linear", scaled_linear, {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
    Textbook("sigmoid", sigmoid, {"beta_schedule": "sigmoid", "beta_start": 1e-4, "beta_end": 0.02}),
    Textbook("cosine_math", cosine_math, {"beta_schedule": "cosine"}),
    Textbook("cosine_torch", cosine_torch, {"beta_schedule": "cosine"}),
)
TEXTBOOKS: dict[str, Textbook] = {
    **{b.name: b for b in _BASES},
    **{f"{b.name}+zero_snr": Textbook(f"{b.name}+zero_snr", b.build, {**b.conventions, "rescale_betas_zero_snr": True},
                                      zero_snr=True) for b in _BASES},
}


class TextbookDDIM(HandDDIM):
    """The zoo's plain DDIM sampler on a given β table, with ᾱ = cumprod(1 − β) in the table's dtype."""

    def __init__(self, name: str, conventions: dict[str, Any], betas: torch.Tensor) -> None:
        self._declared = conventions
        super().__init__()
        self.name = f"textbook-{name}-{str(betas.dtype).replace('torch.', '')}"
        self.betas = betas.double().numpy()
        self.alpha_bar = torch.cumprod(1 - betas, dim=0).double().numpy()

    def extra_conventions(self) -> dict[str, Any]:
        return dict(self._declared)


def sampler_for(name: str, dtype: str, betas: torch.Tensor | None = None) -> Any:
    """The textbook sampler of ``TEXTBOOKS[name]`` in ``dtype`` (or on the given, mutated, β table)."""
    tb = TEXTBOOKS[name]
    table = tb.betas(DTYPES[dtype]) if betas is None else betas
    return TextbookDDIM(name, tb.conventions, table).as_sampler()


def schedule_results(sampler: Any, dtype: str) -> dict[str, CheckResult]:
    ctx = CheckContext(sampler, dtype=dtype, profile="quick", seed=0)
    return {r.name: r for r in schedule.check_schedule(ctx)}


def ratio(r: CheckResult) -> float:
    """The worst observed/tolerance ratio of a schedule check."""
    return float(r.details["worst_ratio"])


# -- honest tables pass -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(TEXTBOOKS))
def test_honest_textbook_table_passes_the_schedule_checks(name: str, dtype: str) -> None:
    """Every honest textbook table passes ``schedule.*`` using at most half of its tolerance.

    The measured worst ratios are 0.02–0.12 (float64 and float32 alike), so the verdict has a
    margin of 8× or more against any CPU kernel's rounding.
    """
    results = schedule_results(sampler_for(name, dtype), dtype)
    for check in SCHEDULE_NAMES:
        r = results[check]
        assert r.verdict is Verdict.PASS, f"{name} {dtype}: {check}: {r.message}"
        assert ratio(r) <= HONEST_MAX_RATIO, f"{name} {dtype}: {check} uses {ratio(r):.3g} of its tolerance"
        assert r.details["table_dtype"] == dtype


@functools.lru_cache(maxsize=None)
def _full_report(name: str, dtype: str) -> Any:
    sampler = sampler_for(name, dtype)
    return run_checks(sampler, CheckContext(sampler, dtype=dtype, profile="quick", seed=0), ALL_CHECKS)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", ["linear", "scaled_linear", "sigmoid", "cosine_math", "cosine_torch"])
def test_honest_textbook_sampler_passes_the_whole_harness(name: str, dtype: str) -> None:
    """A plain DDIM on a textbook table passes every check of the quick profile.

    The zero-terminal-SNR tables are left to the schedule test above: this ε-prediction sampler is
    singular at ᾱ_T = 0 (x̂₀ divides by √ᾱ_T), which is a property of the sampler, not of the table.
    """
    report = _full_report(name, dtype)
    bad = [r for r in report.checks if r.verdict not in (Verdict.PASS, Verdict.SKIPPED)]
    assert not bad, "\n".join(f"{r.name}: {r.verdict.value} {r.message[:200]}" for r in bad)


# -- mutants fail -----------------------------------------------------------------------------------


def _perturbed(betas: torch.Tensor, rel: float, *, keep_last: bool = False) -> torch.Tensor:
    """β·(1 + rel) in the table's dtype (the exact last β = 1 of a zero-SNR table kept: β ≤ 1)."""
    out = (betas.double() * (1.0 + rel)).to(betas.dtype)
    if keep_last:
        out[-1] = betas[-1]
    return out


def _assert_mutant_fails(name: str, dtype: str, betas: torch.Tensor) -> None:
    results = schedule_results(sampler_for(name, dtype, betas), dtype)
    worst = max(ratio(results[c]) for c in SCHEDULE_NAMES)
    assert any(results[c].verdict is Verdict.FAIL for c in SCHEDULE_NAMES), (
        f"{name} {dtype} mutant passed: " + "; ".join(results[c].message for c in SCHEDULE_NAMES))
    assert worst >= MUTANT_MIN_RATIO, f"{name} {dtype} mutant only {worst:.3g}× its tolerance"


@pytest.mark.parametrize("name", list(TEXTBOOKS))
def test_float64_relative_perturbation_of_1e_10_fails(name: str) -> None:
    r"""β·(1 + 10⁻¹⁰) in a float64 table fails ``schedule.betas``.

    The float64 relative tolerances (4 × the first-order bound, u = 2⁻⁵³ ≈ 1.11·10⁻¹⁶): linear
    4·7u = 3.1·10⁻¹⁵, scaled_linear 4·22u = 9.8·10⁻¹⁵, sigmoid 4·58u = 2.6·10⁻¹⁴, so 10⁻¹⁰ is
    ≥ 3.9·10³ times the bound at every index. For cosine the clip entry β = 0.999 has tolerance
    4·2u = 8.9·10⁻¹⁶ (ratio 1.1·10⁵). For the zero-SNR tables (base β perturbed, then rescaled)
    β′₁ = β₁ is moved by 10⁻¹⁰ against a tolerance of 4(δβ₁ + 9u(1 − β₁)/β₁ + 2u)
    (4·10⁻¹¹ at β₁ = 10⁻⁴); the measured worst ratios are ≥ 55.
    """
    tb = TEXTBOOKS[name]
    base = tb.build(torch.float64)
    betas = _perturbed(base, 1e-10)
    if tb.zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    _assert_mutant_fails(name, "float64", betas)


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "sigmoid"])
def test_float32_relative_perturbation_of_3e_4_fails(name: str) -> None:
    r"""β·(1 + 3·10⁻⁴) in a float32 table fails ``schedule.betas`` and ``schedule.alphas_cumprod``.

    Float32 β tolerances (u = 2⁻²⁴ ≈ 5.96·10⁻⁸): linear 4·7u = 1.67·10⁻⁶, scaled_linear
    4·22u = 5.2·10⁻⁶, sigmoid 4·58u = 1.38·10⁻⁵: 3·10⁻⁴ is 180×, 57× and 22× the bound. ᾱ_T moves
    by 3·10⁻⁴·Σβ/(1 − β) (10.2, 5.4, 10.2) against 4(γ₂₀₀₀ + δβ·Σβ/(1 − β)) = 4.9·10⁻⁴, 5.0·10⁻⁴,
    6.2·10⁻⁴: 6.2×, 3.2× and 4.9× (at 10⁻⁴ the ᾱ verdict of scaled_linear would sit at 1.07×, on an edge).
    """
    tb = TEXTBOOKS[name]
    results = schedule_results(sampler_for(name, "float32", _perturbed(tb.build(torch.float32), 3e-4)), "float32")
    for check in SCHEDULE_NAMES:
        assert results[check].verdict is Verdict.FAIL, f"{name}: {check}: {results[check].message}"
        assert ratio(results[check]) >= MUTANT_MIN_RATIO, f"{name}: {check} only {ratio(results[check]):.3g}×"


@pytest.mark.parametrize("name", ["linear+zero_snr", "scaled_linear+zero_snr", "sigmoid+zero_snr"])
def test_float32_zero_snr_relative_perturbation_of_1e_3_fails(name: str) -> None:
    r"""The rescaled float32 table β′·(1 + 10⁻³) (all but the exact β′_T = 1) fails ``schedule.betas``.

    Algorithm 1 recomputes β′ = 1 − ᾱ′_t/ᾱ′_{t−1} from rounded float32 values, so its tolerance is
    4·(1 − β′)/β′·(2P_t + 9u) + 8u (docs/tolerances.md): smallest near t = T where β′ → 1. At
    t = T − 1 (0-based 998) it is 6.6·10⁻⁵ (linear), 1.1·10⁻⁴ (scaled_linear), 8.3·10⁻⁵ (sigmoid),
    so 10⁻³ is 15×, 8.8× and 12× the bound there. (A perturbation of the *base* β is partly undone by
    the rescaling, which normalises ᾱ′_1 and ᾱ′_T.)
    """
    tb = TEXTBOOKS[name]
    _assert_mutant_fails(name, "float32", _perturbed(tb.betas(torch.float32), 1e-3, keep_last=True))


_COSINES = ("cosine_math", "cosine_torch")
_OFFSET_MUTANTS = [
    *[(n + z, "float64", s) for n in _COSINES for z in ("", "+zero_snr") for s in (0.0081, 0.008001)],
    *[(n, "float32", 0.01) for n in _COSINES],
    *[(n + "+zero_snr", "float32", 0.016) for n in _COSINES],
]


@pytest.mark.parametrize("name,dtype,s", _OFFSET_MUTANTS)
def test_wrong_cosine_offset_fails(name: str, dtype: str, s: float) -> None:
    r"""The cosine schedule with a wrong offset s (declared: 0.008) fails ``schedule.*``.

    With :math:`\theta_i = (i/T + s)/(1 + s)\cdot\pi/2`, near the start
    :math:`\beta_1 \approx \theta_1^2 - \theta_0^2 \propto 2s/T + 1/T^2`, so
    ∂ln β₁/∂ln s ≈ 2sT/(2sT + 1) = 0.94: s = 0.0081 moves β₁ by 1.2 %, s = 0.008001 by 1.2·10⁻⁴.

    * float64: the tolerance at β₁ = 4.1·10⁻⁵ is 4·((1 − β₁)/β₁·(δf₁ + δf₀ + u) + 2u) ≈ 1.6·10⁻¹⁰,
      so those are 7·10⁷× and 7·10⁵× the bound (zero-SNR: 4.5·10⁷×, 4.5·10⁵×).
    * float32, every operation in float32: the same cancellation costs 2²⁹ times more, 8.7 % at β₁,
      and no β alone can tell s = 0.0081 from rounding. ᾱ can: ᾱ_t = f(t+1)/f(0) (the product
      telescopes), ∂ln ᾱ_t/∂s = −2(tan θ_{t+1}·∂θ_{t+1}/∂s − tan θ₀·∂θ₀/∂s) = −0.31 at t = 69, while
      its tolerance there is 4(δf₇₀ + δf₀ + Σ 3u) ≈ 4·224u = 5.3·10⁻⁵. s = 0.01 moves ᾱ₆₉ by
      6.3·10⁻⁴: 12× the bound, and β₁ by 24 %: 2.7× (s = 0.0081: 0.59× and 0.13×, undetectable).
    * float32 zero-SNR: the rescaling has no telescoping product to lean on; s = 0.016 moves β′₁ = β₁
      by 94 %, 6.6× its tolerance of 14 % (4·(δβ₁ + 9u(1 − β₁)/β₁ + 2u)).
    """
    builder = cosine_math if name.startswith("cosine_math") else cosine_torch
    betas = builder(DTYPES[dtype], s)
    if TEXTBOOKS[name].zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    _assert_mutant_fails(name, dtype, betas)
