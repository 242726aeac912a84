r"""The diagnosis self-test: every planted bug of the zoo against the diagnosis it must get.

The planted bugs live in the repository's ``tests/quality/zoo.py`` (step targets) and
``tests/quality/loops.py`` (loop targets); this module needs the repository root on ``sys.path`` (run
``python -m ddspec.conformance.diagnosis --table`` from it). :data:`EXPECTED` maps every planted bug to
the catalogue pattern that must be the top diagnosis, or to None where the bug is outside the
catalogue (a crash, a hang, a global-RNG draw, a dtype, a batch-wide quantile, a reversed or skipped
sequence): the diagnosis must then say "no known pattern", never a guess. :func:`out_of_catalogue`
adds the issue's two bugs that no pattern describes: a 3 % perturbation of one step coefficient (drawn
with a fixed seed) and noise drawn from a uniform law (``2·rand − 1`` where ``randn`` belongs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["EXPECTED", "Case", "cases", "out_of_catalogue", "top_diagnosis", "run_case", "Row", "render_table"]

#: planted bug → the top diagnosis it must get (None: "no known pattern").
EXPECTED: dict[str, str | None] = {
    # tests/quality/zoo.py (step targets)
    "ddim_timesteps_off_by_one": "steps_offset_ignored",
    "ddim_alpha_bar_index_off_by_one": "alpha_bar_index_shift",
    "ddim_alpha_bar_float16": "table_precision",
    "ddim_final_alpha_bar_not_one": "final_alpha_bar",
    "ddim_missing_sqrt": "x0_missing_sqrt",
    "ddim_v_prediction_sign": "v_sign",
    "ddpm_beta_for_beta_tilde": "beta_for_beta_tilde",
    "ddim_sigma_not_squared": "sigma_squared_as_sigma",
    "ddim_sigma_unrespaced_beta": "sigma_from_beta",
    "ddim_eta_ignored": "eta_ignored",
    "ddpm_final_step_noise": "final_step_noise",
    "ddpm_respaced_beta_wrong": "unrespaced_beta",
    "clip_range_ignored": "clip_range",
    "x0_not_clipped": "x0_clip_missing",
    "threshold_over_batch": None,
    "mutates_input": "input_mutation",
    "ddpm_generator_dropped": None,
    "returns_float32": None,
    "ddim_sigma_index_wraps": "unclamped_sqrt_nan",
    "ddim_last_step_raises": None,
    "ddim_last_step_hangs": None,
    # tests/quality/loops.py (loop targets)
    "loop:model_at_t_plus_one": "model_timestep_offset",
    "loop:undeclared_rescale": "model_timestep_offset",
    "loop:alpha_prev_at_t_minus_1": "prev_timestep_minus_one",
    "loop:noise_reused": "noise_reused",
    "loop:noise_shared_batch": "noise_reused",
    "loop:noise_at_last_step": "final_step_noise",
    "loop:not_clipped": "x0_clip_missing",
    "loop:clipped_undeclared": "x0_clip_unexpected",
    "loop:eta_ignored": "eta_ignored",
    "loop:sigma_from_beta_t": "sigma_beta_t",
    "loop:tutorial_sigma_from_beta_t": "sigma_beta_t",
    "loop:wrong_order": None,
    "loop:step_skipped": None,
    "loop:returns_before_last": "final_state_skipped",
    "loop:mutates_input": "input_mutation",
    "loop:global_rng_despite_generator": None,
    "loop:learned_range_unshifted": "learned_range_unshifted",
    "loop:crashes": None,
    "loop:returns_nan": None,
    "loop:hangs": None,
    # out of the catalogue (this module)
    "out:coefficient_3pct": None,
    "out:uniform_noise_loop": None,
}


@dataclass(frozen=True)
class Case:
    r"""One planted bug: its name, a factory of the target, the dtypes it is run in, the per-call timeout."""

    name: str
    factory: Callable[[], Any]
    dtypes: tuple[str, ...]
    timeout_s: float = 30.0


def out_of_catalogue() -> list[Case]:
    r"""The two bugs no catalogue entry describes (the issue's examples)."""
    import numpy as np
    import torch

    from tests.quality import loops, zoo

    rng = np.random.default_rng(20240610)
    which = int(rng.integers(0, 2))  # which coefficient of DDIM eq. 12 is perturbed by 3 %

    class Coefficient3pct(zoo.HandDDIM):
        name = "ddim-coefficient-3pct"

        def direction_coef(self, p: float, sigma: float) -> float:
            c = super().direction_coef(p, sigma)
            return c * 1.03 if which == 0 else c

        def predict_x0(self, eps: torch.Tensor, x_t: torch.Tensor, a: float) -> torch.Tensor:
            x0 = super().predict_x0(eps, x_t, a)
            return x0 * 1.03 if which == 1 else x0

    class UniformNoise(loops.PlainDDIM):
        def noise(self, x: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            return 2.0 * u - 1.0  # rand for randn: uniform on [-1, 1], std 0.577, not Gaussian

    from ddspec.conformance.adapters.loop import LoopSampler

    return [
        Case("out:coefficient_3pct", lambda: Coefficient3pct().as_sampler(), ("float32", "float64")),
        Case("out:uniform_noise_loop", lambda: LoopSampler(UniformNoise(), loops._DDIM, name="UniformNoise"),
             ("float32", "float64")),
    ]


def cases() -> list[Case]:
    r"""Every planted bug of :data:`EXPECTED` (zoo, loops, out of the catalogue)."""
    from tests.quality import loops, zoo

    # every bug runs in both dtypes, except one that exists in one dtype only (a float32 output is a bug
    # only in a float64 run)
    out = [Case(e.name, e.factory, e.dtypes if len(e.dtypes) == 1 and e.dtypes != ("float32",)
                else ("float32", "float64"), e.timeout_s) for e in zoo.ZOO]
    out += [Case(f"loop:{c.name}", c.factory, ("float32", "float64"), c.timeout_s) for c in loops.BUGS]
    out += out_of_catalogue()
    return [c for c in out if c.name in EXPECTED]


def run_case(case: Case, dtype: str, profile: str = "quick") -> Any:
    r"""Run the harness (with the diagnosis) on one planted bug; the :class:`Report`."""
    from ..adapters import adapt
    from ..context import CheckContext
    from ..runner import installed_checks, run_checks

    sampler = adapt(case.factory())
    ctx = CheckContext(sampler, dtype=dtype, profile=profile, timeout_s=case.timeout_s)
    return run_checks(sampler, ctx, installed_checks())


def top_diagnosis(report: Any) -> str | None:
    r"""The first named pattern of the report's diagnosis, or None ("no known pattern", or nothing failed)."""
    for d in report.diagnosis:
        if d.pattern is not None:
            return d.pattern
    return None


@dataclass(frozen=True)
class Row:
    """One row of the confusion table: the bug, what it must get, what it got per dtype."""

    name: str
    expected: str | None
    got: dict[str, str | None]
    failed: dict[str, bool]


def render_table(rows: list[Row], dtypes: tuple[str, ...]) -> str:
    r"""The Markdown confusion table (planted bug × top diagnosis per dtype) and its summary line."""
    def cell(v: str | None) -> str:
        return "no known pattern" if v is None else f"`{v}`"

    head = "| planted bug | must get | " + " | ".join(dtypes) + " |"
    lines = [head, "|" + "---|" * (2 + len(dtypes))]
    agree = total = 0
    for r in rows:
        marks = []
        for d in dtypes:
            if d not in r.got:
                marks.append("—")
                continue
            total += 1
            ok = r.got[d] == r.expected
            agree += ok
            marks.append(("✓ " if ok else "✗ ") + cell(r.got[d]) + ("" if r.failed[d] else " (no check failed)"))
        lines.append(f"| `{r.name}` | {cell(r.expected)} | " + " | ".join(marks) + " |")
    lines.append("")
    lines.append(f"{agree} of {total} runs get the diagnosis they must get.")
    return "\n".join(lines) + "\n"
