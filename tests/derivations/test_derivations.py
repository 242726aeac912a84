"""The machine-checked derivations: every step checks, and each check fails on a planted error.

Expected values here are stated by the papers (the step a derivation claims) or derived in closed
form (the Gaussian moments); the planted errors are the common slips of DDPM/DDIM write-ups.
"""

from __future__ import annotations

from typing import Callable

import pytest
import sympy as sp

from ddspec.derivations import (
    DERIVATIONS,
    NUMERIC_DPS,
    NUMERIC_POINTS,
    Derivation,
    Step,
    check,
    get,
    variable,
    with_step_replaced,
)
from ddspec.derivations.gaussian import log_normal
from ddspec.derivations.notation import abar, abar_prev, alpha, beta, beta_tilde, mu_tilde, x0, xt

NUMERIC_LABEL = f"numeric, {NUMERIC_POINTS} points at {NUMERIC_DPS} digits"


def _sym(d: Derivation, name: str) -> sp.Symbol:
    """The symbol of ``d``'s variable called ``name``."""
    return next(v.symbol for v in d.variables if v.symbol.name == name)


# --------------------------------------------------------------------------------------------------
# every derivation checks
# --------------------------------------------------------------------------------------------------


def test_the_issue_s_list_is_covered() -> None:
    names = {d.name for d in DERIVATIONS}
    assert {
        "forward-marginal",
        "posterior",
        "posterior-eps-form",
        "gaussian-kl",
        "lt-weight",
        "vlb-decomposition",
        "ddim-marginals",
        "ddim-eta-one",
        "ddim-ode",
        "v-prediction",
        "cosine-schedule",
        "zero-terminal-snr",
        "classifier-guidance",
        "classifier-free-guidance",
    } <= names


@pytest.mark.parametrize("derivation", DERIVATIONS, ids=lambda d: d.name)
def test_every_step_checks(derivation: Derivation) -> None:
    result = check(derivation)
    bad = [f"step {r.index} ({r.step.description}): {r.method}: {r.detail}" for r in result.steps if not r.ok]
    assert not bad, f"{derivation.name}: " + "; ".join(bad)
    for r in result.steps:
        # every ✓ names a real check: a sympy route, or the labelled numeric fallback
        assert r.method.startswith("sympy: ") or r.method == NUMERIC_LABEL, (derivation.name, r.index, r.method)


# --------------------------------------------------------------------------------------------------
# a planted error in one step of each derivation is seen, on exactly that step
# --------------------------------------------------------------------------------------------------

Mutation = Callable[[Derivation, Step], sp.Expr]

PLANTED: dict[str, tuple[int, str, Mutation]] = {
    "forward-marginal": (
        4,
        "posterior variance β_t instead of β̃_t",
        lambda d, s: log_normal(_sym(d, "x_prev"), mu_tilde(xt, x0), beta) + log_normal(xt, sp.sqrt(abar) * x0, 1 - abar),
    ),
    "posterior": (
        4,
        "√ᾱ_t where √ᾱ_{t−1} belongs in the x_0 coefficient",
        lambda d, s: s.after - sp.sqrt(abar_prev) * beta / (1 - abar) * x0 + sp.sqrt(abar) * beta / (1 - abar) * x0,
    ),
    "posterior-eps-form": (
        4,
        "β_t/(1−ᾱ_t) instead of β_t/√(1−ᾱ_t)",
        lambda d, s: (xt - beta / (1 - abar) * _sym(d, "eps")) / sp.sqrt(alpha),
    ),
    "gaussian-kl": (3, "the ½ on the log dropped", lambda d, s: s.after + sp.log(_sym(d, "v_2") / _sym(d, "v_1")) / 2),
    "lt-weight": (3, "σ_t⁴ (a ‖Σ‖²) in the weight", lambda d, s: s.after / _sym(d, "sigma2")),
    "vlb-decomposition": (4, "L_0 with the wrong sign", lambda d, s: s.after + 2 * _sym(d, "logp_0")),
    "ddim-marginals": (3, "1 − ᾱ_t where 1 − ᾱ_{t−1} belongs", lambda d, s: 1 - abar),
    "ddim-eta-one": (2, "σ² = η β̃ instead of η² β̃", lambda d, s: _sym(d, "eta") * beta_tilde),
    "ddim-ode": (1, "the σ difference with its sign flipped", lambda d, s: 2 * xt / sp.sqrt(_sym(d, "abar_t")) - s.after),
    "v-prediction": (
        3,
        "x_0 = √ᾱ x_t + √(1−ᾱ) v (sign slip)",
        lambda d, s: x0 + 2 * sp.sqrt(1 - _sym(d, "abar_t")) * (sp.sqrt(_sym(d, "abar_t")) * _sym(d, "eps") - sp.sqrt(1 - _sym(d, "abar_t")) * x0),
    ),
    "cosine-schedule": (2, "cos instead of cos²", lambda d, s: sp.sqrt(s.after)),
    "zero-terminal-snr": (
        4,
        "d_{t−1} − d_t instead of d_{t−1} + d_t",
        lambda d, s: (_sym(d, "r_prev") - _sym(d, "r_t")) ** 2 / (_sym(d, "r_prev") - _sym(d, "r_T")) ** 2,
    ),
    "classifier-guidance": (3, "mean shift g instead of Σg", lambda d, s: s.after.subs(_sym(d, "Sigma") * _sym(d, "g"), _sym(d, "g"))),
    "classifier-free-guidance": (
        2,
        "the guidance scale used as w: ε(x) + w(ε(x,c) − ε(x))",
        lambda d, s: _sym(d, "eps_u") + _sym(d, "w") * (_sym(d, "eps_c") - _sym(d, "eps_u")),
    ),
}


def test_every_derivation_has_a_planted_error() -> None:
    assert set(PLANTED) == {d.name for d in DERIVATIONS}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_a_planted_error_is_seen_on_exactly_that_step(name: str) -> None:
    d = get(name)
    index, what, mutate = PLANTED[name]
    step = d.steps[index - 1]
    wrong = mutate(d, step)
    assert sp.sympify(wrong) != sp.sympify(step.after), f"{name}: the mutation '{what}' changed nothing"
    result = check(with_step_replaced(d, index, after=wrong))
    assert not result.ok
    verdicts = {r.index: r.ok for r in result.steps}
    assert verdicts == {i: i != index for i in verdicts}, f"{name} ({what}): {verdicts}"
    bad = result.steps[index - 1]
    assert bad.method == "numeric counterexample"
    assert "the sides differ at" in bad.detail and "relative difference" in bad.detail


def test_with_step_replaced_refuses_a_bad_index() -> None:
    d = get("posterior")
    with pytest.raises(ValueError, match=r"index=0"):
        with_step_replaced(d, 0, after=sp.Integer(0))
    with pytest.raises(ValueError, match=r"index=7"):
        with_step_replaced(d, 7, after=sp.Integer(0))


# --------------------------------------------------------------------------------------------------
# the checker itself
# --------------------------------------------------------------------------------------------------

_PHI = variable("phi", "φ", r"\phi", 0, "3/2")
_A = variable("a", "a", "a", None, None)
_B = variable("b", "b", "b", None, None)


def _one_step(before: sp.Expr, after: sp.Expr, *variables) -> Derivation:  # type: ignore[no-untyped-def]
    return Derivation(
        name="test-step",
        title="a test step",
        topic="test",
        source="this test",
        variables=tuple(variables),
        steps=(Step("the claim", before, after, "the test says so"),),
    )


def test_the_numeric_fallback_is_used_and_labelled_where_sympy_cannot_decide() -> None:
    # √(cos²φ) = cos φ needs cos φ > 0, which sympy does not derive from 0 < φ < 3/2
    phi = _PHI.symbol
    result = check(_one_step(sp.sqrt(sp.cos(phi) ** 2), sp.cos(phi), _PHI))
    (r,) = result.steps
    assert r.ok and r.numeric and r.method == NUMERIC_LABEL
    assert "did not reduce the difference to 0" in r.detail
    from ddspec.derivations import format_result

    assert f"✓ 1. the claim ({NUMERIC_LABEL})" in format_result(result)


def test_the_numeric_fallback_sees_a_difference_far_below_float64() -> None:
    # a relative error of 1e-30 is invisible in float64, not at 50 digits with a 1e-40 tolerance
    phi = _PHI.symbol
    (r,) = check(_one_step(sp.sin(phi), sp.sin(phi) * (1 + sp.Rational(1, 10**30)), _PHI)).steps
    assert not r.ok and r.method == "numeric counterexample"


def test_logarithms_are_not_split_without_positivity() -> None:
    # log(ab) = log a + log b is false for a, b < 0 (the right side gains 2πi): not a ✓
    a, b = _A.symbol, _B.symbol
    (r,) = check(_one_step(sp.log(a * b), sp.log(a) + sp.log(b), _A, _B)).steps
    assert not r.ok


def test_square_roots_are_not_merged_without_positivity() -> None:
    # √a √b = √(ab) is false for a, b < 0
    a, b = _A.symbol, _B.symbol
    (r,) = check(_one_step(sp.sqrt(a) * sp.sqrt(b), sp.sqrt(a * b), _A, _B)).steps
    assert not r.ok


def test_an_up_to_constant_step_ignores_constants_only() -> None:
    x = variable("x", "x", "x", None, None)
    m = variable("m", "m", "m", None, None)
    quad = -((x.symbol - m.symbol) ** 2) / 2

    def one(after: sp.Expr) -> bool:
        d = Derivation(
            name="t", title="t", topic="t", source="t", variables=(x, m),
            steps=(Step("s", quad, after, "j", up_to_constant_in=(x.symbol,)),),
        )
        return check(d).ok

    assert one(-(x.symbol**2) / 2 + m.symbol * x.symbol + 7 * m.symbol**3)  # differs by a constant in x
    assert not one(-(x.symbol**2) / 2 + m.symbol * x.symbol + x.symbol / 1000)  # differs by a term in x


def test_an_undeclared_symbol_is_refused() -> None:
    z = sp.Symbol("z")
    with pytest.raises(ValueError, match=r"step 1: symbols z are not declared"):
        _one_step(z, z, _A)


def test_constraints_are_honoured_by_the_numeric_points() -> None:
    # √(1 − ᾱ_{t−1} − σ²)² = 1 − ᾱ_{t−1} − σ² is real only under σ² < 1 − ᾱ_{t−1}; the points obey it
    d = get("ddim-marginals")
    sig2, abp = _sym(d, "sigma2"), _sym(d, "abar_prev")
    claim = sp.Abs(sp.sqrt(1 - abp - sig2)) ** 2
    dd = Derivation(
        name="t", title="t", topic="t", source="t", variables=d.variables, constraints=d.constraints,
        steps=(Step("s", claim, 1 - abp - sig2, "j"),),
    )
    assert check(dd).ok
    unconstrained = Derivation(
        name="t2", title="t", topic="t", source="t", variables=d.variables,
        steps=(Step("s", claim, 1 - abp - sig2, "j"),),
    )
    assert not check(unconstrained).ok  # somewhere σ² > 1 − ᾱ_{t−1}, where |√·|² ≠ the (negative) radicand


# --------------------------------------------------------------------------------------------------
# the Gaussian helpers
# --------------------------------------------------------------------------------------------------


def test_gaussian_moments_match_the_closed_forms() -> None:
    from ddspec.derivations.gaussian import gaussian_moment

    m, v = sp.symbols("m v", positive=True)
    # E[x^k] of N(m, v): the Hermite closed forms
    expected = [1, m, m**2 + v, m**3 + 3 * m * v, m**4 + 6 * m**2 * v + 3 * v**2]
    for k, e in enumerate(expected):
        assert sp.expand(gaussian_moment(k, m, v) - e) == 0, k


def test_gaussian_moment_5_against_quadrature() -> None:
    import mpmath

    from ddspec.derivations.gaussian import gaussian_moment

    with mpmath.workdps(30):
        mu, var = mpmath.mpf(7) / 10, mpmath.mpf(13) / 10
        quad = mpmath.quad(
            lambda x: x**5 * mpmath.exp(-((x - mu) ** 2) / (2 * var)) / mpmath.sqrt(2 * mpmath.pi * var),
            [-mpmath.inf, mu, mpmath.inf],
        )
        closed = gaussian_moment(5, sp.Rational(7, 10), sp.Rational(13, 10))
        assert abs(quad - mpmath.mpf(sp.Float(closed, 30))) < mpmath.mpf("1e-20") * abs(quad)


# --------------------------------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------------------------------


def test_cli_checks_a_derivation_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    from ddspec.derivations import cli_main

    assert cli_main(["posterior", "ddim-eta-one"]) == 0
    out = capsys.readouterr().out
    assert "✓ posterior:" in out and "✓ ddim-eta-one:" in out and "✗" not in out
    assert "2 derivations, 10 steps: all ✓" in out
    assert cli_main(["-v", "ddim-eta-one"]) == 0
    verbose = capsys.readouterr().out
    assert "because: ᾱ_t/ᾱ_{t−1} = α_t = 1 − β_t" in verbose and "= β_t*η**2" in verbose


def test_cli_shows_the_numeric_label(capsys: pytest.CaptureFixture[str]) -> None:
    from ddspec.derivations import cli_main

    assert cli_main(["cosine-schedule"]) == 0
    assert f"({NUMERIC_LABEL})" in capsys.readouterr().out


def test_cli_unknown_name_exits_2_and_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    from ddspec.derivations import cli_main

    assert cli_main(["posterior", "no-such-derivation"]) == 2
    captured = capsys.readouterr()
    assert "'no-such-derivation'" in captured.err and "unknown derivation" in captured.err


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    from ddspec.derivations import cli_main

    assert cli_main(["--list"]) == 0
    out = capsys.readouterr().out
    for d in DERIVATIONS:
        assert d.name in out


def test_cli_exits_1_on_a_failing_step(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ddspec.derivations import cli, registry

    d = get("ddim-eta-one")
    index, _, mutate = PLANTED["ddim-eta-one"]
    broken = with_step_replaced(d, index, after=mutate(d, d.steps[index - 1]))
    monkeypatch.setattr(cli, "get", lambda name: broken if name == d.name else registry.get(name))
    assert cli.cli_main([d.name]) == 1
    out = capsys.readouterr().out
    assert f"✗ {index}. " in out and "the sides differ at" in out


def test_python_dash_m_runs_the_cli() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "ddspec.derivations", "--list"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "vlb-decomposition" in proc.stdout


# --------------------------------------------------------------------------------------------------
# the generated docs
# --------------------------------------------------------------------------------------------------


def test_docs_are_up_to_date() -> None:
    from pathlib import Path

    from ddspec.derivations import render_markdown

    root = Path(__file__).resolve().parents[2] / "docs" / "derivations"
    pages = render_markdown()
    on_disk = {p.name for p in root.glob("*.md")}
    assert on_disk == set(pages), f"docs/derivations/ has {sorted(on_disk)}, the generator {sorted(pages)}"
    stale = [name for name, text in pages.items() if (root / name).read_text(encoding="utf-8") != text]
    assert not stale, (
        f"docs/derivations/{', '.join(stale)} are stale: run "
        "`python -m ddspec.derivations --write-docs docs/derivations`"
    )
