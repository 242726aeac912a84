"""The formula checker: rearranged correct forms match, planted errors are found and located, bad input is refused.

Expected values are derived: a correct form is a rearrangement proved by hand (or a textbook identity),
and a planted error is placed at known points, so the checker must report exactly those points.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ddspec.audit import QUANTITIES, check_formula, cli_main

FAST = ("linear:60", "cosine:60")  # small schedules (strided pairs from the 10-step subsequence)


@pytest.mark.parametrize(
    ("quantity", "expr"),
    [
        # β̃_t = (1 − ᾱ_{t−1})β_t/(1 − ᾱ_t) = β_t − β_t²ᾱ_{t−1}/(1 − ᾱ_t), since 1 − ᾱ_t − β_t(1 − ᾱ_{t−1}) = ... (Ho eq. 7)
        ("posterior_variance", "beta_t - beta_t**2*alpha_bar_prev/(1 - alpha_bar_t)"),
        ("posterior_variance", "beta_t*(1 - alpha_bar_prev)/(1 - alpha_bar_prev*alpha_t)"),
        ("posterior_variance", "Piecewise((1/(alpha_t/beta_t + 1/(1 - alpha_bar_prev)), t > 1), (0, True))"),
        ("posterior_mean_coef1", "sqrt(alpha_bar_prev)*(1 - alpha_t)/(1 - alpha_bar_t)"),
        ("posterior_mean_coef2", "sqrt(alpha_t)*(1 - alpha_bar(t - 1))/(1 - alpha_bar(t))"),
        ("alpha_bar", "Product(1 - beta(k), (k, 1, t))"),
        ("alpha_bar", "exp(Sum(log(alpha(k)), (k, 1, t)))"),
        ("ddim_sigma", "eta*sqrt(beta_tilde_t)"),
        ("ddim_sigma", "eta*sqrt((1 - alpha_bar_prev)*(alpha_bar_prev - alpha_bar_t)/((1 - alpha_bar_t)*alpha_bar_prev))"),
        ("ddim_direction", "sqrt((1 - alpha_bar_prev)/(1 - alpha_bar_t)*((1 - eta**2)*(1 - alpha_bar_t) + eta**2*alpha_bar_t*(1 - alpha_bar_prev)/alpha_bar_prev))"),
        ("lt_weight", "(1 - alpha_t)**2/(2*sigma_t**2*alpha_t*(1 - alpha_bar_t))"),
        ("x0_from_eps_coef_eps", "-sqrt(1/alpha_bar_t - 1)"),
        ("ddpm_mean_coef_eps", "-(1 - alpha_t)/sqrt(alpha_t - alpha_t*alpha_bar_t)"),
        ("cosine_beta", "Min(1 - alpha_bar(t)/alpha_bar(t - 1), max_beta)"),
        ("cosine_alpha_bar", "sin((1 - t/T)/(1 + s)*pi/2)**2/sin(1/(1 + s)*pi/2)**2"),
    ],
)
def test_rearranged_correct_forms_match(quantity: str, expr: str) -> None:
    schedules = ("cosine:60",) if QUANTITIES[quantity].cosine_only else FAST
    v = check_formula(expr, quantity, schedules, symbolic=False)
    assert v.matches, v.message()
    assert v.erratum is None
    assert v.points_failed == 0


def test_symbolic_verdicts() -> None:
    proved = check_formula("beta_t - beta_t**2*alpha_bar_prev/(1 - alpha_bar_t)", "posterior_variance", FAST)
    assert proved.symbolic is True, proved.symbolic_note
    wrong = check_formula("beta_t", "posterior_variance", FAST)
    assert wrong.symbolic is False and "at" in wrong.symbolic_note
    strided = check_formula("sqrt(alpha_bar(t - 1))", "ddim_x0_coefficient", FAST)
    assert strided.symbolic is None  # ᾱ at an index the symbolic model does not relate: numerics decide
    assert not strided.matches


def test_planted_error_is_located_exactly() -> None:
    # off by a relative 1e-12 for papers' t > 40 only: the tolerance (8 ULP ≈ 1.8e-15) must catch each such point
    v = check_formula("beta_tilde_t*(1 + Piecewise((10**-12, t > 40), (0, True)))", "posterior_variance", FAST, symbolic=False)
    assert not v.matches
    assert v.points_failed == 2 * 20  # t = 41..60 on both schedules
    assert v.where is not None and v.where.t + 1 > 40
    assert 0.9e-12 < v.worst_relative_error < 1.1e-12
    assert v.tolerance == pytest.approx(8 * 2.0**-52)


def test_noise_one_step_early_fails_exactly_at_index_1() -> None:
    v = check_formula("Piecewise((sqrt(beta_t), idx > 1), (0, True))", "ddpm_noise_std_fixed_large", FAST, symbolic=False)
    assert not v.matches and v.points_failed == 2
    assert v.where is not None and v.where.t == 1
    assert [p.t for p, _ in v.first_failures] == [1, 1]
    assert v.erratum == "noise_stops_one_step_early"


def test_strided_pairs_and_etas_are_checked() -> None:
    # ᾱ_{t−1} for ᾱ_prev agrees on consecutive steps; only the strided pairs can expose it
    v = check_formula("sqrt(alpha_bar(t - 1))", "ddim_x0_coefficient", FAST, symbolic=False)
    assert v.where is not None and v.where.t_prev != v.where.t - 1
    # σ² = ηβ̃ agrees at η ∈ {0, 1}: with those η alone it passes, with η = 0.5 it does not
    assert check_formula("sqrt(eta*beta_tilde_t)", "ddim_sigma", FAST, etas=(0.0, 1.0), symbolic=False).matches
    v = check_formula("sqrt(eta*beta_tilde_t)", "ddim_sigma", FAST, etas=(0.5,), symbolic=False)
    assert not v.matches and v.erratum == "sigma_squared_eta_beta_tilde"


def test_not_real_values_never_match() -> None:
    v = check_formula("-sqrt(alpha_bar_t - 1)/sqrt(alpha_bar_t)", "x0_from_eps_coef_eps", FAST, symbolic=False)
    assert not v.matches and v.worst_relative_error == float("inf")
    assert "complex" in v.got
    assert v.erratum == "sign_slip_in_x0_from_eps"


def test_callable_correct_and_wrong() -> None:
    def beta_tilde(beta_t: np.ndarray, alpha_bar_prev: np.ndarray, alpha_bar_t: np.ndarray) -> np.ndarray:
        return (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t

    v = check_formula(beta_tilde, "posterior_variance", FAST)
    assert v.matches, v.message()
    assert v.symbolic is None

    def sigma(eta: np.ndarray, beta_tilde_t: np.ndarray) -> np.ndarray:
        return np.sqrt(eta * beta_tilde_t)

    w = check_formula(sigma, "ddim_sigma", FAST)
    assert not w.matches and w.erratum == "sigma_squared_eta_beta_tilde"


def test_callable_cancellation_is_covered_by_its_condition_number() -> None:
    # σ(η) written with 1 − ᾱ_t/ᾱ_prev cancels in float64: relative error ~u/β' (~1e-12 at the first steps of
    # linear:60), far beyond the reference's 8 ULP. It is a correct formula; the callable's condition number
    # κ ≈ 1/(2β') widens the tolerance to 32u(1 + κ), and the verdict says so.
    def sigma(eta: np.ndarray, alpha_bar_t: np.ndarray, alpha_bar_prev: np.ndarray) -> np.ndarray:
        return eta * np.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev))

    v = check_formula(sigma, "ddim_sigma", ("linear:60",), etas=(1.0,))
    assert v.matches, v.message()
    assert "condition number" in v.tolerance_rule

    # the widened tolerance still catches a relative error of 1e-9 (32u(1 + κ) ≲ 1e-10 for κ ≲ 1e4)
    def planted(eta: np.ndarray, alpha_bar_t: np.ndarray, alpha_bar_prev: np.ndarray) -> np.ndarray:
        return sigma(eta, alpha_bar_t, alpha_bar_prev) * (1 + 1e-9)

    w = check_formula(planted, "ddim_sigma", ("linear:60",), etas=(1.0,))
    assert not w.matches and w.points_failed == w.points_checked - 1  # all but index 0, where σ = 0


def test_cosine_alpha_bar_tolerance_is_derived_and_tight() -> None:
    form = "cos((t/T + s)/(1 + s)*pi/2)**2/cos(s/(1 + s)*pi/2)**2"
    ok = check_formula(form, "cosine_alpha_bar", ("cosine:60",), symbolic=False)
    assert ok.matches, ok.message()
    # the propagated-β term 8u·Σβ/(1 − β) makes the bound grow with t, but stays far below 1e-12
    assert 8 * 2.0**-52 <= ok.tolerance < 1e-13
    bad = check_formula(f"({form})*(1 + 10**-12)", "cosine_alpha_bar", ("cosine:60",), symbolic=False)
    assert not bad.matches and bad.points_failed == bad.points_checked  # every t = 0 .. T − 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"fn_or_expr": "beta_t +", "quantity": "posterior_variance"}, "expr='beta_t +'"),
        ({"fn_or_expr": "abar_t", "quantity": "posterior_variance"}, "abar_t"),
        ({"fn_or_expr": "gamma(beta_t)", "quantity": "posterior_variance"}, "gamma"),
        ({"fn_or_expr": "", "quantity": "posterior_variance"}, "expr=''"),
        ({"fn_or_expr": "beta_t", "quantity": "posterior_varience"}, "quantity='posterior_varience'"),
        ({"fn_or_expr": "beta_t", "quantity": "posterior_variance", "schedules": ("linaer",)}, "schedules='linaer'"),
        ({"fn_or_expr": "beta_t", "quantity": "cosine_beta", "schedules": ("linear:20",)}, "include 'cosine'"),
        ({"fn_or_expr": "eta", "quantity": "ddim_sigma", "etas": (2.0,)}, "etas="),
        ({"fn_or_expr": 3.0, "quantity": "posterior_variance"}, "fn_or_expr=3.0"),
        ({"fn_or_expr": lambda bogus: bogus, "quantity": "posterior_variance"}, "bogus"),
    ],
)
def test_bad_input_names_the_argument(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        check_formula(**kwargs)
    assert needle in str(info.value), str(info.value)


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--schedule", "linear:40", "--no-symbolic"]
    assert cli_main(["(1 - alpha_bar_prev)/(1 - alpha_bar_t)*beta_t", "--quantity", "posterior_variance", *base]) == 0
    assert "MATCHES" in capsys.readouterr().out
    assert cli_main(["beta_t", "--quantity", "posterior_variance", *base]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS" in out and "beta_for_beta_tilde" in out and "expected" in out and "tolerance" in out
    assert cli_main(["beta_t +", "--quantity", "posterior_variance", *base]) == 2
    assert "expr='beta_t +'" in capsys.readouterr().err
    assert cli_main(["beta_t", "--quantity", "nope", *base]) == 2
    assert "quantity='nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["beta_t"])  # --quantity is required
    assert exc.value.code == 2


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["sqrt(eta*beta_tilde_t)", "--quantity", "ddim_sigma", "--schedule", "linear:40", "--eta", "0.5", "--json"])
    assert code == 1
    data = json.loads(capsys.readouterr().out)
    assert data["erratum"] == "sigma_squared_eta_beta_tilde" and data["matches"] is False
    assert data["where"]["eta"] == 0.5 and data["symbolic"] is False


def test_audit_imports_neither_torch_nor_conformance() -> None:
    import subprocess
    import sys

    code = ("import sys, ddspec.audit; bad = [m for m in sys.modules if m.split('.')[0] == 'torch' "
            "or m.startswith('ddspec.conformance')]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
