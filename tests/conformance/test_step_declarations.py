r"""``supported_num_steps`` and ``coefficient_dtype`` for step targets (issue 8 §3).

Both are declared once, in :mod:`ddspec.conformance.protocol`, for any target kind; :class:`FunctionSampler`
takes them as keyword arguments, and the step families read them.

* ``coefficient_dtype``: a DDIM step (Song et al. 2021, eq. 12, with σ(η) of eq. 16) whose coefficients come
  from a float64 ᾱ table but are rounded to float32 before use (improved-diffusion's
  ``_extract_into_tensor(...).float()``), applied in float64. Each coefficient c carries a relative error up
  to u₃₂ = 2⁻²⁴ ≈ 6·10⁻⁸, whereas the float64 error model allows a few u₆₄ = 2⁻⁵³ ≈ 1.1·10⁻¹⁶ per
  operation: the undeclared target must fail ``single_step`` in a float64 run by orders of magnitude, and the
  declared one, charged at u_step = max(u_table, u₃₂), must pass.
* ``supported_num_steps``: a target that only runs some N (its step and its ``timesteps`` raise for the
  others) is run at its N only; the others are reported as not supported, never failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from ddspec.conformance.adapters.function import FunctionSampler
from ddspec.conformance.adapters.loop import LoopSampler
from ddspec.conformance.checks import invariants
from ddspec.conformance.checks._common import plan_step_family, step_tolerance
from ddspec.conformance.checks.coefficients import check_coefficients
from ddspec.conformance.checks.oracle import check_point_mass_oracle
from ddspec.conformance.checks.single_step import check_single_steps
from ddspec.conformance.checks.timesteps import check_timesteps
from ddspec.conformance.context import CheckContext
from ddspec.conformance.protocol import (
    Conventions,
    NumStepsSupport,
    coefficient_dtype,
    declared_timesteps,
    num_steps_support,
    supported_num_steps,
)
from ddspec.conformance.results import CheckResult, Verdict
from ddspec.reference.alphas import alpha_bar

U32, U64 = 2.0**-24, 2.0**-53


def _betas(T: int) -> np.ndarray:
    return np.linspace(1e-4, 0.02, T)


class Unsupported(ValueError):
    """What the planted targets raise for an N they do not run."""


def ddim_step_fn(
    conv: Conventions, alphas_cumprod: np.ndarray, *, round_to: torch.dtype | None,
    only: Callable[[int], bool] = lambda n: True,
) -> Callable[..., torch.Tensor]:
    r"""A hand-written DDIM step (eq. 12, σ of eq. 16, ε-prediction), written here from the paper.

    .. math::

        x_{t'} = \sqrt{\bar\alpha_{t'}}\,\Big(\sqrt{1/\bar\alpha_t}\,x_t - \sqrt{1/\bar\alpha_t - 1}\,\epsilon\Big)
                 + \sqrt{1 - \bar\alpha_{t'} - \sigma^2}\,\epsilon + \sigma z

    The five coefficients are formed in float64 from the float64 table; with ``round_to`` each is rounded to
    that dtype (``.to(round_to)``) and brought back to x_t's dtype before use, as improved-diffusion does.
    ``only(N)`` False makes the step raise (a sampler that runs only some N).
    """

    def step(model_output: torch.Tensor, t: int, x_t: torch.Tensor, *, num_steps: int, eta: float,
             noise: torch.Tensor | None, generator: torch.Generator | None,
             predicted_variance: torch.Tensor | None) -> torch.Tensor:
        if not only(num_steps):
            raise Unsupported(f"this sampler cannot run N={num_steps}")
        ts = declared_timesteps(conv, num_steps).tolist()
        k = ts.index(int(t))
        ab_t = float(alphas_cumprod[t])
        ab_p = float(alphas_cumprod[ts[k + 1]]) if k + 1 < len(ts) else 1.0
        var = eta**2 * (1.0 - ab_p) / (1.0 - ab_t) * (1.0 - ab_t / ab_p)
        raw = [np.sqrt(1.0 / ab_t), np.sqrt(1.0 / ab_t - 1.0), np.sqrt(ab_p), np.sqrt(max(1.0 - ab_p - var, 0.0)),
               np.sqrt(var)]
        coef = [torch.tensor(c, dtype=torch.float64) for c in raw]
        if round_to is not None:
            coef = [c.to(round_to) for c in coef]
        c1, c2, c3, c4, c5 = (c.to(x_t.dtype) for c in coef)
        x0 = c1 * x_t - c2 * model_output
        out = c3 * x0 + c4 * model_output
        if var > 0:
            z = noise if noise is not None else torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype)
            out = out + c5 * z
        return out

    return step


def ddim_target(T: int, *, round_to: torch.dtype | None, **declared: Any) -> FunctionSampler:
    conv = Conventions(family="ddim", num_train_timesteps=T)
    b = _betas(T)
    only = declared.pop("only", lambda n: True)

    def timesteps(n: int) -> np.ndarray:
        if not only(n):
            raise Unsupported(f"this sampler cannot run N={n}")
        return declared_timesteps(conv, n)

    return FunctionSampler(ddim_step_fn(conv, alpha_bar(b), round_to=round_to, only=only), b, conv,
                           timesteps_fn=timesteps, name="ddim-f32-coefficients", **declared)


def _ctx(target: Any, dtype: str = "float64", steps: tuple[int, ...] | None = (10,)) -> CheckContext:
    return CheckContext(target, dtype=dtype, profile="quick", seed=0, steps=steps)


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


# -- (a) coefficient_dtype --------------------------------------------------------------------------


def test_float32_coefficients_are_far_outside_the_float64_model() -> None:
    """The premise, derived: at the steps of an N = 10 run, every coefficient moves by far more than the
    float64 model allows (a few u64 relative), since rounding to float32 moves it by up to u32 relative."""
    T = 1000
    ab = alpha_bar(_betas(T))
    conv = Conventions(family="ddim", num_train_timesteps=T)
    ts = declared_timesteps(conv, 10).tolist()
    moved = []
    for t, tp in zip(ts, ts[1:] + [-1]):
        ab_p = 1.0 if tp < 0 else float(ab[tp])
        for c in (np.sqrt(1 / ab[t]), np.sqrt(1 / ab[t] - 1), np.sqrt(ab_p)):
            moved.append(abs(float(np.float32(c)) - c) / c)
    assert max(moved) <= U32                  # round to nearest: at most u32 relative
    assert max(moved) > 1e5 * U64             # and far above float64 rounding somewhere in the run


def test_undeclared_float32_coefficients_fail_single_step_in_float64() -> None:
    results = _by_name(check_single_steps(_ctx(ddim_target(1000, round_to=torch.float32))))
    r = results["single_step.eta=0"]
    assert r.verdict is Verdict.FAIL, r.message
    # the error is the coefficient rounding, ~u32 relative, against a bound of a few u64: orders of magnitude
    assert r.details["worst_ratio"] > 1e3
    assert r.details["u_step"] == U64


def test_declared_float32_coefficients_pass_single_step_in_float64() -> None:
    target = ddim_target(1000, round_to=torch.float32, coefficient_dtype=torch.float32)
    assert target.coefficient_dtype is torch.float32 and coefficient_dtype(target) is torch.float32
    results = check_single_steps(_ctx(target))
    assert results and all(r.verdict is Verdict.PASS for r in results), [(r.name, r.message) for r in results]
    # the coefficient fit charges the same declaration (its rounding term at u32, not the table's u64)
    fitted = check_coefficients(_ctx(target))
    assert fitted and all(r.verdict is Verdict.PASS for r in fitted), [(r.name, r.message) for r in fitted]
    assert fitted[0].details["coefficient_dtype"] == "float32"
    undeclared = check_coefficients(_ctx(ddim_target(1000, round_to=torch.float32)))
    assert any(r.verdict is Verdict.FAIL for r in undeclared), [(r.name, r.message) for r in undeclared]
    details = results[0].details
    # u_step = max(u_table, u32): the float64 table stays float64, the step is charged at float32's roundoff
    assert details["u_table"] == U64 and details["u_step"] == U32
    assert "declared coefficient_dtype" in details["table_note"]


def test_coefficient_dtype_raises_only_the_rounding_term() -> None:
    """The δ's of the table stay at the table's roundoff; the declared dtype enters u_step only."""
    plain = ddim_target(50, round_to=None)
    declared = ddim_target(50, round_to=None, coefficient_dtype="float32")
    conv = plain.conventions
    betas = _betas(50)
    a, b = step_tolerance(_ctx(plain), conv, betas), step_tolerance(_ctx(declared), conv, betas)
    assert np.array_equal(a.deltas, b.deltas) and a.u_table == b.u_table == U64
    assert a.u_step == U64 and b.u_step == U32
    # a declaration at or below the run's dtype changes nothing
    wide = step_tolerance(_ctx(ddim_target(50, round_to=None, coefficient_dtype=torch.float64)), conv, betas)
    assert wide.u_step == U64


def test_an_exact_float64_step_passes_without_a_declaration() -> None:
    """The control: the same step with unrounded coefficients is within the float64 model."""
    results = check_single_steps(_ctx(ddim_target(1000, round_to=None)))
    assert results and all(r.verdict is Verdict.PASS for r in results), [(r.name, r.message) for r in results]


# -- (b) supported_num_steps ------------------------------------------------------------------------

T_SMALL = 50


@pytest.mark.parametrize("declaration", [{T_SMALL}, lambda n: n == T_SMALL], ids=["set", "predicate"])
def test_only_the_supported_n_is_run_and_the_others_are_never_failed(declaration: Any) -> None:
    target = ddim_target(T_SMALL, round_to=None, supported_num_steps=declaration, only=lambda n: n == T_SMALL)
    ctx = _ctx(target, steps=None)  # quick profile: N in (1, 10), neither supported
    assert set(ctx.steps) == {1, 10}
    description = supported_num_steps(target).description
    results = check_single_steps(ctx) + check_timesteps(ctx) + check_point_mass_oracle(ctx) + check_coefficients(ctx)
    for check in invariants.CHECKS:
        results += check(ctx)
    bad = [(r.name, r.verdict, r.message) for r in results if r.verdict not in (Verdict.PASS, Verdict.SKIPPED)]
    assert not bad, bad
    # every step family runs the smallest supported N <= T instead, and names the profile N it left out
    assert any(r.name.startswith("coefficients.") and r.verdict is Verdict.PASS for r in results)
    # the point-mass oracle would run N = T end to end, beyond the quick profile's oracle_max_steps: skipped,
    # saying both why the profile's N are not run and why N = T is not
    oracle = [r for r in results if r.name.startswith("oracle.point_mass")]
    assert oracle and all(r.verdict is Verdict.SKIPPED for r in oracle)
    assert all("N=10: not in the target's supported_num_steps" in r.message and "oracle_max_steps" in r.message
               for r in oracle)
    ran = [r for r in results if r.name.startswith("invariants.") and r.verdict is Verdict.PASS]
    assert ran and all(r.details["runs_skipped"]["N=10"].startswith("not in the target's supported_num_steps")
                       for r in ran), [(r.name, r.details.get("runs_skipped")) for r in ran]
    single = [r for r in results if r.name.startswith(("single_step", "coefficients."))]
    assert single and all(r.details["steps_tested"] == [T_SMALL] for r in single)
    for r in single:
        assert r.details["runs_skipped"] == {
            f"N={n}": f"not in the target's supported_num_steps ({description})" for n in (1, 10)}
    # the timesteps family: N = T checked, every other N skipped with the declaration named
    by_name = _by_name(results)
    assert by_name[f"timesteps.sequence.N={T_SMALL}"].verdict is Verdict.PASS
    for n in (1, 2, 3, 7, 10):
        r = by_name[f"timesteps.sequence.N={n}"]
        assert r.verdict is Verdict.SKIPPED
        assert r.message == f"N={n}: not in the target's supported_num_steps ({description})"


def test_undeclared_the_same_target_fails_at_the_n_it_cannot_run() -> None:
    """The control: without the declaration the raising N are failures (the declaration is what saves it)."""
    target = ddim_target(T_SMALL, round_to=None, only=lambda n: n == T_SMALL)
    ctx = _ctx(target, steps=None)
    single = check_single_steps(ctx)
    times = _by_name(check_timesteps(ctx))
    assert single and all(r.verdict is Verdict.FAIL and "Unsupported" in r.message for r in single)
    assert times["timesteps.sequence.N=10"].verdict is Verdict.FAIL
    assert "Unsupported" in times["timesteps.sequence.N=10"].message


def test_a_supported_profile_n_is_run_and_the_unsupported_one_listed() -> None:
    divides = lambda n: T_SMALL % n == 0  # noqa: E731 - the declaration under test
    target = ddim_target(T_SMALL, round_to=None, supported_num_steps=divides, only=divides)
    family = plan_step_family(_ctx(target, steps=(7, 10)), "single_step")
    assert not isinstance(family, list), family
    assert [p.num_steps for p in family.plans] == [10]
    assert list(family.skipped) == ["N=7"] and "supported_num_steps" in family.skipped["N=7"]
    assert not family.notes
    # the point-mass oracle plans through the same chooser: N = 10 run end to end, N = 7 named
    oracle = check_point_mass_oracle(_ctx(target, steps=(7, 10)))
    assert oracle and all(r.verdict is Verdict.PASS for r in oracle), [(r.name, r.message) for r in oracle]
    assert all(r.details["steps_tested"] == [10] and "N=7" in r.details["runs_skipped"] for r in oracle)


def test_the_timesteps_family_checks_the_smallest_supported_n_when_none_of_its_own_is() -> None:
    # its own N are the profile's plus 1, 2, 3, 7 and T; N = 5 is none of them
    target = ddim_target(T_SMALL, round_to=None, supported_num_steps={5, 40}, only=lambda n: n in (5, 40))
    results = _by_name(check_timesteps(_ctx(target, steps=(10,))))
    assert results["timesteps.sequence.N=5"].verdict is Verdict.PASS
    assert "timesteps.sequence.N=40" not in results
    others = [r for name, r in results.items() if name != "timesteps.sequence.N=5"]
    assert {r.name for r in others} == {f"timesteps.sequence.N={n}" for n in (1, 2, 3, 7, 10, T_SMALL)}
    assert all(r.verdict is Verdict.SKIPPED and "supported_num_steps=[5, 40]" in r.message for r in others)


def test_no_supported_n_at_all_is_skipped_with_the_reason() -> None:
    target = ddim_target(T_SMALL, round_to=None, supported_num_steps={T_SMALL + 1})
    ctx = _ctx(target, steps=(10,))
    single = check_single_steps(ctx)
    assert single and all(r.verdict is Verdict.SKIPPED and "supported_num_steps" in r.message for r in single)
    inv = invariants.check_finite(ctx)
    assert inv and all(r.verdict is Verdict.SKIPPED and "supported_num_steps" in r.message for r in inv)


def test_a_predicate_that_raises_fails_naming_the_declaration() -> None:
    def broken(n: int) -> bool:
        raise RuntimeError("oops")

    target = ddim_target(T_SMALL, round_to=None, supported_num_steps=broken)
    ctx = _ctx(target)
    for r in check_single_steps(ctx) + invariants.check_finite(ctx):
        assert r.verdict is Verdict.FAIL and "supported_num_steps" in r.message and "oops" in r.message
    times = _by_name(check_timesteps(ctx))
    assert times["timesteps.sequence.N=10"].verdict is Verdict.FAIL


# -- (c) bad declarations ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, argument", [
    ({"supported_num_steps": "10"}, "supported_num_steps"),
    ({"supported_num_steps": {0}}, "supported_num_steps"),
    ({"supported_num_steps": {True}}, "supported_num_steps"),
    ({"supported_num_steps": set()}, "supported_num_steps"),
    ({"supported_num_steps": 10}, "supported_num_steps"),
    ({"supported_num_steps": {10: [1]}}, "supported_num_steps"),
    ({"coefficient_dtype": torch.int32}, "coefficient_dtype"),
    ({"coefficient_dtype": "float8"}, "coefficient_dtype"),
    ({"coefficient_dtype": np.float32}, "coefficient_dtype"),
])
def test_bad_declarations_raise_naming_the_attribute(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}="):
        ddim_target(T_SMALL, round_to=None, **kwargs)


class _Declared:
    """A duck-typed target carrying raw declarations (read by the protocol's helpers)."""

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


@pytest.mark.parametrize("attrs, argument", [
    ({"supported_num_steps": [0, 5]}, "supported_num_steps"),
    ({"supported_num_steps": b"10"}, "supported_num_steps"),
    ({"coefficient_dtype": "int32"}, "coefficient_dtype"),
    ({"coefficient_dtype": 32}, "coefficient_dtype"),
])
def test_the_protocol_helpers_validate_a_duck_typed_attribute(attrs: dict, argument: str) -> None:
    helper = supported_num_steps if argument == "supported_num_steps" else coefficient_dtype
    with pytest.raises(ValueError, match=rf"^{argument}="):
        helper(_Declared(**attrs))


def test_a_bad_attribute_set_later_fails_the_step_families() -> None:
    target = ddim_target(T_SMALL, round_to=None)
    target.coefficient_dtype = "int8"  # type: ignore[assignment]
    ctx = _ctx(target)
    for r in check_single_steps(ctx) + invariants.check_finite(ctx):
        assert r.verdict is Verdict.FAIL and "coefficient_dtype" in r.message


def test_the_helpers_read_undeclared_targets_as_every_n_and_the_run_dtype() -> None:
    bare = _Declared()
    assert supported_num_steps(bare) == NumStepsSupport() and not supported_num_steps(bare).declared
    assert supported_num_steps(bare).supports(1) and supported_num_steps(bare).description == "every N"
    assert coefficient_dtype(bare) is None
    assert coefficient_dtype(_Declared(coefficient_dtype="torch.bfloat16")) is torch.bfloat16
    steps = num_steps_support(range(10, 31, 10))
    assert steps.supports(20) and not steps.supports(25) and steps.smallest(15) == 10 and steps.smallest(9) is None
    assert num_steps_support(steps) is steps


def test_loop_and_step_targets_share_one_declaration() -> None:
    """LoopSampler keeps its public behaviour but reads through the protocol (no second copy)."""
    conv = Conventions(family="ddim", num_train_timesteps=T_SMALL)
    loop = LoopSampler(lambda model, x, n: x, conv, supported_num_steps={10}, coefficient_dtype="float32")
    step = ddim_target(T_SMALL, round_to=None, supported_num_steps={10}, coefficient_dtype=torch.float32)
    assert supported_num_steps(loop) == supported_num_steps(step)
    assert loop.supported_description() == supported_num_steps(step).description == "supported_num_steps=[10]"
    assert loop.supports(10) and not loop.supports(5) and not loop.supports(T_SMALL + 10)
    assert coefficient_dtype(loop) is coefficient_dtype(step) is torch.float32
