r"""Fitting: which catalogued pattern explains what a failing target did.

For a failing target the harness drives it once more on controlled inputs and records *evidence*:

* **step targets**: every step (or a sample of the steps) of one or two N-step runs, with x_t, the
  model output and the noise z drawn by the harness (z injected, so that every step is exact), for
  η = 0 and the profile's largest η (DDIM); the target's ᾱ table and timestep sequences.
* **loop targets**: one run driven by the field probe of :mod:`ddspec.conformance.trajectory` per η;
  its recorded transitions (the loop draws its own noise), the t it passed its model, its output.

Each pattern is scored on the evidence of its kind, and so is the reference:

* deterministic transitions (z known, or σ below the error bound): the worst ratio
  :math:`|x_\mathrm{got} - x_\mathrm{pattern}| / \tau` with τ the per-element bound of
  :mod:`ddspec.conformance.tolerances` (plus the float64 rounding of the pattern's own evaluation,
  :math:`\gamma_{64}(2^{-53}) M`);
* stochastic transitions (loops): the standardised residuals :math:`u = (x_\mathrm{got} - \mu)/\sigma`
  must be N(0, 1) and independent of x_t: the χ² z-score :math:`(\sum u^2 - n)/\sqrt{2n}`, the
  kurtosis z-score :math:`(\overline{u^4} - 3)/\sqrt{96/n}` and the correlation z-score
  :math:`\sqrt n\,\hat\rho(u, x_t)` are compared with the two-sided
  :math:`\alpha = 10^{-6}` critical value 4.89 (their ratio to it is the pattern's score).

Continuous parameters are fitted (the noise factor by least squares or by the rms of u, the last
step's σ, a clip range, a dtype, a schedule's s or β range). A pattern is reported only when it
explains its evidence (score ≤ 1) and clearly beats the reference (the reference's score > 1 and at
least twice the pattern's); otherwise the result is "no known pattern explains this", with the
closest pattern and its score.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ddspec.reference import alphas as ref_alphas
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES, NAMED_SPACINGS

from ..expectation import reference_timesteps
from ..protocol import Conventions
from ..results import CheckResult, Diagnosis, Verdict
from ..tolerances import gamma
from .patterns import CATALOGUE, Env, Knobs, Obs, Pattern, make_env, perturbed_step

__all__ = ["Score", "Evidence", "collect_evidence", "score_patterns", "diagnose", "diagnose_evidence", "Z_CRIT", "BEAT_FACTOR"]

Array = np.ndarray

#: Two-sided critical value of a standard normal at α = 1e-6 (the harness's statistical level).
Z_CRIT = 4.891638475698
#: The reference's score must exceed the pattern's by this factor for the pattern to be reported.
BEAT_FACTOR = 2.0
#: Rounding allowance of the float64 evaluation of a pattern: γ_64 at u = 2^-53 times M.
_OWN_ROUNDING = float(gamma(64, 2.0**-53))
_SHAPE = (2, 3, 4, 4)
_MAX_STEPS = 12


@dataclass(frozen=True)
class Score:
    r"""One pattern (or the reference, ``pattern=None``) scored on its evidence.

    ``ratio`` is the worst residual over its tolerance (≤ 1: explained); ``residual`` and
    ``tolerance`` are the numbers at that worst place (for a statistical score: the z-score and
    :data:`Z_CRIT`); ``where`` says where.
    """

    pattern: str | None
    evidence: str
    ratio: float
    residual: float
    tolerance: float
    parameters: dict[str, Any] = field(default_factory=dict)
    where: str = ""


@dataclass
class Evidence:
    r"""What the diagnosis drove and recorded (see the module docstring)."""

    kind: str
    env: Env
    obs: list[Obs] = field(default_factory=list)
    table: Array | None = None
    table_delta: Array | None = None
    sequences: list[tuple[int, Array]] = field(default_factory=list)
    calls: list[tuple[Array, Array]] = field(default_factory=list)
    mutated: bool = False
    runs_by_eta: dict[float, list[Obs]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- driving ---------------------------------------------------------------------------------------


def _numbers_in(names: Sequence[str]) -> list[int]:
    out = []
    for name in names:
        out.extend(int(m) for m in re.findall(r"N=(\d+)", name))
    return out


def _step_counts(wanted: Sequence[int], allowed: Sequence[int], fallback: int | None) -> list[int]:
    chosen = sorted({n for n in wanted if n in allowed and n <= 100})[:1]
    if fallback is not None and fallback not in chosen:
        chosen.append(fallback)
    return chosen[:2]


def _etas(conv: Conventions, etas: Sequence[float]) -> list[float]:
    if conv.family != "ddim":
        return [0.0]
    top = max((float(e) for e in etas), default=0.0)
    return [0.0] if top == 0.0 else [0.0, top]


def _table_delta(ctx: Any, conv: Conventions, betas: Array, table: Array) -> Array | None:
    r"""The relative bound the schedule check applies to the target's ᾱ table (``SAFETY`` × the
    ᾱ bound at the roundoff that check allows for the table's storage dtype)."""
    from ..checks.schedule import _allowed_roundoff
    from ..expectation import zero_snr_original
    from ..tolerances import SAFETY, alpha_bar_relative_bound, table_roundoff, unit_roundoff

    if not np.all(np.isfinite(table)):
        return None
    u = _allowed_roundoff(table_roundoff(table), unit_roundoff(ctx.dtype))
    return SAFETY * alpha_bar_relative_bound(betas, conv.beta_schedule, u, zero_snr_original=zero_snr_original(conv))


def _collect_step(ctx: Any, failing: Sequence[str]) -> Evidence | str:
    from ..checks import _common as cm

    setup = cm.setup_target(ctx, "diagnosis", "harness")
    if isinstance(setup, CheckResult):
        return f"the target's conventions cannot be read ({setup.message})"
    conv = setup.conv
    ev = Evidence("step", make_env(conv, setup.betas))
    table = ctx.call(lambda: np.asarray(ctx.sampler.alphas_cumprod(), dtype=np.float64))
    if table.ok and np.shape(table.value) == setup.betas.shape:
        ev.table = table.value
        ev.table_delta = _table_delta(ctx, conv, setup.betas, table.value)
    counts = cm.step_counts(ctx, setup)
    for n in counts[:4]:
        seq = ctx.call(lambda n=n: ctx.sampler.timesteps(n))
        if seq.ok:
            raw = seq.value
            arr = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
            ev.sequences.append((n, np.asarray(arr).reshape(-1)))
    rng = np.random.default_rng(ctx.seed)
    for n in _step_counts(_numbers_in(failing), counts, cm.representative_steps(ctx, setup)):
        plan, _note, why = cm.plan_for(ctx, setup, n)
        if plan is None:
            ev.notes.append(f"N={n}: {why}")
            continue
        positions = cm.choose_steps(len(plan.pairs), _MAX_STEPS, rng)
        for eta in _etas(conv, ctx.settings.etas):
            for k in positions:
                t, t_prev = plan.pairs[k]
                base = cm.offset_for("diagnosis", n, k, eta)
                x_t, x64 = cm.torch_input(ctx, ctx.randn(_SHAPE, base + 1, dtype=torch.float64, device="cpu"))
                m_t, m64 = cm.torch_input(ctx, ctx.randn(_SHAPE, base + 2, dtype=torch.float64, device="cpu"))
                z_t, z64 = cm.torch_input(ctx, ctx.randn(_SHAPE, base + 3, dtype=torch.float64, device="cpu"))
                pv = cm.random_predicted_variance(ctx, conv, _SHAPE, base + 4)
                pv64 = None if pv is None else cm.exact_of(pv)
                keep = x_t.clone()
                tr, call = setup.driver(ctx).transition(step=k, t=t, t_prev=t_prev, num_steps=n, eta=eta,
                                                        model_output=m_t, x_t=x_t, noise=z_t, predicted_variance=pv)
                if tr is None:
                    ev.notes.append(call.why or f"step(t={t}) gave no output")
                    if setup.driver(ctx).timed_out:
                        return ev
                    continue
                if not torch.equal(x_t, keep):
                    ev.mutated = True
                got = tr.x_prev
                bound = cm.error_bound(setup, eta, t, t_prev, m64, x64, z64, pv64)
                ev.obs.append(Obs(t, t_prev, n, eta, x64, m64, got, z64, pv64, last=k == len(plan.pairs) - 1,
                                  step=k, bound=bound))
    return ev


def _collect_loop(ctx: Any, failing: Sequence[str]) -> Evidence | str:
    from ..checks import _loop as lp
    from ..expectation import step_spec

    setup = lp.setup_loop(ctx, "diagnosis")
    if isinstance(setup, CheckResult):
        return f"the loop cannot be set up ({setup.message})"
    conv = setup.conv
    ev = Evidence("loop", make_env(conv, setup.betas))
    if getattr(setup.target, "has_tables", False):
        table = ctx.call(lambda: np.asarray(setup.target.alphas_cumprod(), dtype=np.float64))
        if table.ok and np.shape(table.value) == setup.betas.shape:
            ev.table = table.value
            ev.table_delta = _table_delta(ctx, conv, setup.betas, table.value)
    wanted = [n for n in _numbers_in(failing) if n in setup.counts and 1 < n <= 50]
    small = [n for n in setup.counts if n <= 50]
    n = max(wanted) if wanted else (10 if 10 in setup.counts else (max(small) if small else min(setup.counts, default=0)))
    if not n:
        return "no step count the loop supports"
    try:
        ts = np.asarray(setup.target.expected_timesteps(n), dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 - a user declaration
        return f"the loop's declared timesteps for N={n} cannot be read ({exc})"
    etas = sorted({e for e in setup.etas if e is not None} | ({None} if None in setup.etas else set()),
                  key=lambda e: -1.0 if e is None else e)
    if len(etas) > 2:
        etas = [etas[0], etas[-1]]
    table_t = setup.timestep_table
    for eta in etas:
        run = lp.field_run(ctx, setup, n, eta)  # the run the checks judged, when they ran this N
        if run.input_mutated:
            ev.mutated = True
        calls = [c for c in run.calls if c.x_t is not None and c.output is not None]
        if run.output is None or len(calls) != len(ts) or len(calls) != len(run.calls):
            ev.notes.append(f"N={n}: the run made {len(run.calls)} model calls for {len(ts)} declared timesteps"
                            + (f" ({run.error})" if run.error else ""))
            continue
        declared_t = ts.astype(np.float64) if table_t is None else table_t[ts]
        ev.calls.append((ts, np.array([c.t_value for c in calls], dtype=np.float64), declared_t))
        channels = int(run.output.shape[1]) if conv.family == "ddpm" and conv.variance_type in LEARNED_VARIANCE_TYPES else None
        e = float(eta or 0.0)
        spec = step_spec(conv, e)
        obs_run = []
        for k, call in enumerate(calls):
            last = k == len(calls) - 1
            t = int(ts[k])
            t_prev = int(ts[k + 1]) if not last else (-1 if conv.final_alpha_bar_is_one else 0)
            x_prev = run.output if last else calls[k + 1].x_t
            m, pv = call.output, None
            if channels is not None:
                m, pv = call.output[:, :channels], call.output[:, channels:]
            bound = setup.tol.bound(spec, t, t_prev, model_output=m, x_t=call.x_t, noise=None, predicted_variance=pv)
            obs_run.append(Obs(t, t_prev, n, e, call.x_t, m, x_prev, None, pv, last=last, step=k, bound=bound))
        ev.obs.extend(obs_run)
        ev.runs_by_eta[e] = obs_run
        ev.sequences.append((n, np.array([c.t if c.t is not None else -10**9 for c in calls], dtype=np.int64)))
    return ev


def collect_evidence(ctx: Any, failing: Sequence[str]) -> Evidence | str:
    r"""Drive the target once more and record the evidence (a string: why it could not be done)."""
    from ..runner import target_kind

    if target_kind(ctx.sampler) == "loop":
        return _collect_loop(ctx, failing)
    return _collect_step(ctx, failing)


# -- scoring transitions -----------------------------------------------------------------------------


def _tol(obs: Obs, pred_mag: Array, sigma: Array) -> Array:
    bound = obs.bound if obs.bound is not None else np.zeros_like(obs.x_t)
    z = np.abs(obs.noise) if obs.noise is not None else 0.0
    return bound + _OWN_ROUNDING * (pred_mag + sigma * z) + 1e-300


def _where(obs: Obs) -> str:
    eta = f", η={obs.eta:g}" if obs.eta else ""
    return f"N={obs.num_steps} step {obs.step} (t={obs.t} → {obs.t_prev}{eta})"


def _finite(obs: list[Obs]) -> list[Obs]:
    """The transitions whose output is finite (a NaN output is the ``"nan"`` evidence's)."""
    return [o for o in obs if np.all(np.isfinite(o.x_prev))]


def _score_transitions(env: Env, obs: list[Obs], knobs: Knobs, name: str | None, params: dict[str, Any],
                       bases: dict[int, Array] | None = None, *, finite: bool = False,
                       stop_above: float = math.inf) -> Score:
    r"""Score ``knobs`` on the transitions. The error model's bound τ was computed for the declared
    step; for a perturbed step it is scaled by the ratio of the two steps' magnitudes M (the rounding
    bound is proportional to M) when that ratio exceeds 1.

    ``stop_above``: once the worst ratio exceeds it, the remaining transitions are not scored and the
    score returned is that lower bound (the caller only needs to know the candidate is worse: see
    :func:`score_step_patterns`)."""
    worst = (0.0, 0.0, 0.0, "")
    u_all: list[Array] = []
    x_all: list[Array] = []
    unperturbed = knobs == Knobs()
    for o in (obs if finite else _finite(obs)):
        try:
            with np.errstate(all="ignore"):
                pred = perturbed_step(env, o, knobs)
                if unperturbed:
                    base = pred.magnitude
                elif bases is not None and id(o) in bases:
                    base = bases[id(o)]
                else:
                    base = perturbed_step(env, o, Knobs()).magnitude
                scale = np.maximum(1.0, np.where(base > 0, pred.magnitude / np.where(base > 0, base, 1.0), 1.0))
        except (ValueError, IndexError, ZeroDivisionError) as exc:
            return Score(name, "step", math.inf, math.inf, 0.0, params, f"{_where(o)}: {exc}")
        sigma = pred.sigma
        if o.bound is not None:
            bound = o.bound * np.where(np.isfinite(scale), scale, 1.0)
            z = np.abs(o.noise) if o.noise is not None else 0.0
            tol = bound + _OWN_ROUNDING * (pred.magnitude + sigma * z) + 1e-300  # _tol with the scaled bound
        else:
            tol = _tol(o, pred.magnitude, sigma)
        if o.noise is not None:
            with np.errstate(all="ignore"):
                err = np.abs(o.x_prev - (pred.mean + sigma * o.noise))
            err = np.where(np.isnan(err), np.inf, err)
            ratio = err / tol
        else:
            r = o.x_prev - pred.mean
            det = sigma <= 10.0 * tol
            err = np.where(det, np.abs(r), 0.0)
            err = np.where(np.isnan(r), np.inf, err)
            tol = tol + 6.0 * sigma  # a σ below the bound: the noise term is judged as part of the error
            ratio = np.where(det, err / tol, 0.0)
            if np.any(~det):
                u_all.append((r / np.where(det, 1.0, sigma))[~det])
                x_all.append(o.x_t[~det])
        j = int(np.argmax(ratio))
        if ratio.flat[j] > worst[0]:
            worst = (float(ratio.flat[j]), float(err.flat[j]), float(tol.flat[j]), _where(o))
            if worst[0] > stop_above:
                return Score(name, "step", worst[0], worst[1], worst[2], params, worst[3] + " (scoring stopped: worse)")
    score = Score(name, "step", worst[0], worst[1], worst[2], params, worst[3])
    if u_all:
        u = np.concatenate(u_all)
        xs = np.concatenate(x_all)
        n = u.size
        if not np.all(np.isfinite(u)):
            return Score(name, "step", math.inf, math.inf, Z_CRIT, params, "non-finite residuals")
        z_chi = (float(np.sum(u * u)) - n) / math.sqrt(2.0 * n)
        xc = xs - xs.mean()
        denom = math.sqrt(float(np.sum(u * u)) * float(np.sum(xc * xc))) or 1.0
        z_corr = float(np.sum(u * xc)) / denom * math.sqrt(n)
        z_kurt = (float(np.mean(u**4)) - 3.0) / math.sqrt(96.0 / n)
        zs = {"χ² of the noise residuals": z_chi, "correlation of the noise with x_t": z_corr,
              "kurtosis of the noise residuals (Gaussian: 3)": z_kurt}
        what = max(zs, key=lambda k: abs(zs[k]))
        z = abs(zs[what])
        if z / Z_CRIT > score.ratio:
            score = Score(name, "step", z / Z_CRIT, z, Z_CRIT, params, f"{what} (z = {z:.3g}, n = {n})")
    return score


def _fit_noise_factor(env: Env, obs: list[Obs]) -> float | None:
    num = den = 0.0
    us: list[Array] = []
    for o in obs:
        pred = perturbed_step(env, o, Knobs())
        sig = pred.sigma
        if not np.any(sig > 0):
            continue
        r = o.x_prev - pred.mean
        if o.noise is not None:
            num += float(np.sum(r * sig * o.noise))
            den += float(np.sum((sig * o.noise) ** 2))
        else:
            keep = sig > 10.0 * _tol(o, pred.magnitude, sig)
            if np.any(keep):
                us.append(r[keep] / sig[keep])
    if den > 0:
        return num / den
    if us:
        u = np.concatenate(us)
        return float(np.sqrt(np.mean(u * u)))
    return None


def _fit_last_sigma(env: Env, obs: list[Obs]) -> float | None:
    num = den = 0.0
    sq: list[Array] = []
    for o in obs:
        if not o.last:
            continue
        pred = perturbed_step(env, o, Knobs())
        r = o.x_prev - pred.mean
        if o.noise is not None:
            num += float(np.sum(r * o.noise))
            den += float(np.sum(o.noise * o.noise))
        else:
            sq.append(r.reshape(-1))
    if den > 0:
        return abs(num / den)
    if sq:
        r = np.concatenate(sq)
        return float(np.sqrt(np.mean(r * r)))
    return None


def _step_candidates(p: Pattern, env: Env, obs: list[Obs]) -> list[tuple[Knobs, dict[str, Any]]]:
    assert p.knobs is not None
    conv = env.conv
    if p.name == "noise_scale":
        k = _fit_noise_factor(env, obs)
        return [] if k is None else [(Knobs(noise_scale=k), {"factor": k})]
    if p.name == "final_step_noise":
        s = _fit_last_sigma(env, obs)
        return [] if s is None or s == 0.0 else [(Knobs(final_sigma=s), {"sigma_last": s})]
    if p.name == "x0_clip_unexpected":
        return [(Knobs(clip="range", clip_range=1.0, rederive=r), {"clip_range": 1.0, "rederive": r})
                for r in (False, True)]
    if p.name == "clip_range":
        return [(Knobs(clip="range", clip_range=r), {"clip_range": r, "declared": conv.clip_sample_range})
                for r in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 10.0) if r != conv.clip_sample_range]
    if p.name == "final_alpha_bar":
        declared = "ᾱ = 1 (the data)" if conv.final_alpha_bar_is_one else "ᾱ_0"
        dest = "ᾱ_0" if conv.final_alpha_bar_is_one else "ᾱ = 1 (the data)"
        return [(p.knobs, {"destination": dest, "declared": declared})]
    return [(p.knobs, {})]


def _applicable(p: Pattern, ev: Evidence) -> bool:
    return ev.kind in p.targets and p.applies(ev.env.conv)


#: The most transitions the step patterns are scored on: a long loop run (N = T) is thinned evenly, and
#: its last :data:`KEEP_LAST` steps are kept whole (near the data the variance choices β, β̃ and the
#: final-step conventions differ most).
MAX_SCORED = 96
KEEP_LAST = 48


def _thin(obs: list[Obs]) -> list[Obs]:
    if len(obs) <= MAX_SCORED + KEEP_LAST:
        return obs
    keep = set(np.linspace(0, len(obs) - 1, MAX_SCORED).round().astype(int).tolist())
    keep.update(range(len(obs) - KEEP_LAST, len(obs)))
    keep.update(i for i, o in enumerate(obs) if o.last)
    return [o for i, o in enumerate(obs) if i in keep]


def _rank(scores: list[Score]) -> list[Score]:
    r"""Best first: patterns that explain (ratio ≤ 1) before the others; among those, the ones with no
    fitted continuous parameter first (a fixed pattern that fits is the simpler explanation), then by ratio."""
    fitted = {p.name: bool(p.fitted) for p in CATALOGUE}
    return sorted(scores, key=lambda s: (s.ratio > 1.0, fitted.get(s.pattern or "", False) if s.ratio <= 1.0 else 0,
                                         s.ratio))


def score_step_patterns(ev: Evidence) -> tuple[Score, list[Score]]:
    r"""The reference's score and every applicable ``"step"`` pattern's best score on the transitions."""
    obs = _finite(_thin(list(ev.obs)))  # filtered once: every candidate scores the same transitions
    ref = _score_transitions(ev.env, obs, Knobs(), None, {}, finite=True)
    with np.errstate(all="ignore"):
        bases = {id(o): perturbed_step(ev.env, o, Knobs()).magnitude for o in obs}
    scores = []
    # a candidate whose worst ratio already exceeds both 1 and the best ratio so far cannot explain the
    # observations nor be the closest pattern: its scoring stops there (its ratio is then a lower bound)
    cutoff = math.inf
    for p in CATALOGUE:
        if p.evidence != "step" or not _applicable(p, ev):
            continue
        best: Score | None = None
        for knobs, params in _step_candidates(p, ev.env, obs):
            s = _score_transitions(ev.env, obs, knobs, p.name, params, bases, finite=True, stop_above=cutoff)
            if best is None or s.ratio < best.ratio:
                best = s
            cutoff = min(cutoff, max(1.0, s.ratio))
        if best is not None:
            scores.append(best)
    return ref, scores


# -- the other kinds of evidence -------------------------------------------------------------------------


def _score_table(ev: Evidence) -> tuple[Score, list[Score]] | None:
    if ev.table is None or ev.table_delta is None:
        return None
    env = ev.env
    target = ev.table
    ref = env.alpha_bar
    delta = np.maximum(ev.table_delta, 1e-300)

    def ratio_of(candidate: Array, extra: float, name: str | None, params: dict[str, Any]) -> Score:
        with np.errstate(all="ignore"):
            rel = np.abs(target / candidate - 1.0)
        rel = np.where(np.isfinite(rel), rel, np.inf)
        tol = delta + extra
        q = rel / tol
        j = int(np.argmax(q))
        return Score(name, "table", float(q[j]), float(rel[j]), float(tol[j]), params, f"ᾱ at index {j}")

    base = ratio_of(ref, 0.0, None, {})
    scores = []
    betas = env.betas
    one_minus = torch.from_numpy(1.0 - betas)
    for dtype, name in ((torch.float16, "float16"), (torch.bfloat16, "bfloat16"), (torch.float32, "float32")):
        cand = torch.cumprod(one_minus.to(dtype), dim=0).to(torch.float64).numpy()
        u = float(torch.finfo(dtype).eps) / 2.0
        scores.append(ratio_of(cand, 4.0 * u, "table_precision", {"dtype": name}))
    fitted = _fit_schedule(env.conv, target)
    if fitted is not None:
        cand_betas, params = fitted
        scores.append(ratio_of(ref_alphas.alpha_bar(cand_betas), 0.0, "schedule_parameter", params))
    best = {}
    for s in scores:
        if s.pattern not in best or s.ratio < best[s.pattern].ratio:
            best[s.pattern] = s
    return base, list(best.values())


def _fit_schedule(conv: Conventions, table: Array) -> tuple[Array, dict[str, Any]] | None:
    from ddspec.reference import schedules

    T = conv.num_train_timesteps
    if T < 3 or not np.all(np.isfinite(table)) or np.any(table <= 0) or np.any(table > 1):
        return None
    prev = np.concatenate([[1.0], table[:-1]])
    beta = 1.0 - table / prev
    idx = np.arange(T, dtype=np.float64) / (T - 1)
    try:
        if conv.beta_schedule == "linear":
            b1, b0 = np.polyfit(idx, beta, 1)
            b0, b1e = float(b0), float(b0 + b1)
            if not 0 < b0 < 1 or not 0 < b1e < 1:
                return None
            return (schedules.linear_betas(T, b0, b1e),
                    {"fitted": f"β from {b0:.6g} to {b1e:.6g}", "declared": f"β from {conv.beta_start:g} to {conv.beta_end:g}",
                     "beta_start": b0, "beta_end": b1e})
        if conv.beta_schedule == "scaled_linear":
            r1, r0 = np.polyfit(idx, np.sqrt(np.maximum(beta, 0.0)), 1)
            b0, b1e = float(r0) ** 2, float(r0 + r1) ** 2
            if not 0 < b0 < 1 or not 0 < b1e < 1:
                return None
            return (schedules.scaled_linear_betas(T, b0, b1e),
                    {"fitted": f"β from {b0:.6g} to {b1e:.6g}", "declared": f"β from {conv.beta_start:g} to {conv.beta_end:g}",
                     "beta_start": b0, "beta_end": b1e})
        if conv.beta_schedule == "cosine":
            from scipy.optimize import minimize_scalar

            def cost(s: float) -> float:
                ab = ref_alphas.alpha_bar(schedules.cosine_betas(T, s))
                return float(np.max(np.abs(np.log(table[:-1]) - np.log(ab[:-1]))))

            res = minimize_scalar(cost, bounds=(1e-5, 0.2), method="bounded", options={"xatol": 1e-9})
            s = float(res.x)
            return schedules.cosine_betas(T, s), {"fitted": f"cosine s = {s:.6g}", "declared": "cosine s = 0.008", "s": s}
    except (ValueError, np.linalg.LinAlgError):
        return None
    return None


def _score_timesteps(ev: Evidence) -> tuple[Score, list[Score]] | None:
    conv = ev.env.conv
    if ev.kind != "step" or conv.timestep_spacing not in NAMED_SPACINGS:
        return None
    mism: list[tuple[int, Array, Array]] = []
    for n, seq in ev.sequences:
        try:
            declared = reference_timesteps(conv, n)
        except ValueError:
            continue
        if seq.shape != declared.shape or not np.array_equal(seq, declared):
            mism.append((n, seq, declared))
    if not mism:
        return None
    ref = Score(None, "timesteps", 2.0, float(len(mism)), 0.0, {}, f"N={mism[0][0]}")
    scores = []
    shifts = {int(seq[-1] - dec[-1]) for _, seq, dec in mism if seq.size and dec.size}
    if len(shifts) == 1:
        d = shifts.pop()
        bad = sum(1 for n, seq, dec in mism if seq.shape != dec.shape or not np.array_equal(seq, dec + d))
        declared_offset = conv.steps_offset if conv.timestep_spacing == "leading" else 0
        scores.append(Score("steps_offset_ignored", "timesteps", 2.0 if bad else 0.0, float(bad), 0.0,
                            {"shift": d, "used": declared_offset + d, "declared": declared_offset}))
    for delta in (-1, 1):
        bad = 0
        for n, seq, _ in mism:
            try:
                other = reference_timesteps(conv, n + delta)
            except ValueError:
                bad += 1
                continue
            if seq.shape != other.shape or not np.array_equal(seq, other):
                bad += 1
        scores.append(Score("timestep_count", "timesteps", 2.0 if bad else 0.0, float(bad), 0.0, {"delta": delta}))
    return ref, scores


def _score_model_t(ev: Evidence) -> tuple[Score, list[Score]] | None:
    if not ev.calls:
        return None
    ts = np.concatenate([c[0] for c in ev.calls]).astype(np.float64)
    got = np.concatenate([c[1] for c in ev.calls])
    declared = np.concatenate([c[2] for c in ev.calls])
    tol = 1e-6 * np.maximum(1.0, np.abs(declared))
    err = np.abs(got - declared)
    j = int(np.argmax(err / tol))
    ref = Score(None, "model_t", float(err[j] / tol[j]), float(err[j]), float(tol[j]), {}, f"call at t={int(ts[j])}")
    if ref.ratio <= 1 or ts.size < 2 or not np.all(np.isfinite(got)):
        return ref, []
    scale, offset = np.polyfit(ts, got, 1) if np.ptp(ts) > 0 else (1.0, float(got[0] - ts[0]))
    # report exact-looking values: an integer offset, a scale 1 or a ratio of round numbers
    if not scale > 0:  # a reversed or constant t is not an offset or a rescaling
        return ref, []
    offset = float(round(offset)) if abs(offset - round(offset)) < 1e-6 else float(offset)
    fit = scale * ts + offset
    err = np.abs(got - fit)
    j = int(np.argmax(err / tol))
    return ref, [Score("model_timestep_offset", "model_t", float(err[j] / tol[j]), float(err[j]), float(tol[j]),
                       {"scale": float(scale), "offset": offset}, f"call at t={int(ts[j])}")]


def _standardised(env: Env, obs: list[Obs]) -> list[tuple[Obs, Array, Array, Array]]:
    out = []
    for o in obs:
        pred = perturbed_step(env, o, Knobs())
        tol = _tol(o, pred.magnitude, pred.sigma)
        keep = pred.sigma > 10.0 * tol
        if o.noise is None and np.all(keep):
            out.append((o, (o.x_prev - pred.mean) / pred.sigma, pred.sigma, tol))
    return out


def _score_noise_reuse(ev: Evidence) -> tuple[Score, list[Score]] | None:
    if ev.kind != "loop":
        return None
    refs, scores = [], []
    for run in ev.runs_by_eta.values():
        std = _standardised(ev.env, run)
        if len(std) < 3:
            continue
        u = [s[1] for s in std]
        pairs = [(u[k].reshape(-1), u[k + 1].reshape(-1)) for k in range(len(u) - 1)]
        a = np.concatenate([p[0] for p in pairs])
        b = np.concatenate([p[1] for p in pairs])
        z_steps = float(np.sum(a * b) / math.sqrt(float(np.sum(a * a) * np.sum(b * b)) or 1.0)) * math.sqrt(a.size)
        first = np.concatenate([x[0].reshape(-1) for x in u])
        others = np.concatenate([x[1:].mean(axis=0).reshape(-1) * math.sqrt(x.shape[0] - 1) for x in u])
        z_batch = float(np.sum(first * others) / math.sqrt(float(np.sum(first**2) * np.sum(others**2)) or 1.0)) * math.sqrt(first.size)
        refs.append(max(abs(z_steps), abs(z_batch)))
        for across in ("steps", "the batch"):
            worst = 0.0
            for o, uk, sig, tol in std:
                u0 = std[0][1] if across == "steps" else np.broadcast_to(uk[:1], uk.shape)
                scale0 = std[0][3] / std[0][2] if across == "steps" else tol[:1] / sig[:1]
                err = np.abs(o.x_prev - (o.x_prev - sig * uk) - sig * u0)
                worst = max(worst, float(np.max(err / (tol + sig * scale0))))
            scores.append(Score("noise_reused", "noise_reuse", worst, worst, 1.0, {"across": across}))
    if not refs:
        return None
    z = max(refs)
    best = {}
    for s in scores:
        key = s.parameters["across"]
        if key not in best or s.ratio > best[key].ratio:
            best[key] = s
    return Score(None, "noise_reuse", z / Z_CRIT, z, Z_CRIT, {}, "correlation of the noise residuals"), list(best.values())


def _score_final_state(ev: Evidence) -> tuple[Score, list[Score]] | None:
    if ev.kind != "loop":
        return None
    last = [o for o in ev.obs if o.last]
    if not last:
        return None
    ref = _score_transitions(ev.env, last, Knobs(), None, {})
    worst = 0.0
    for o in last:
        tol = (o.bound if o.bound is not None else 0.0) + 1e-300
        worst = max(worst, float(np.max(np.abs(o.x_prev - o.x_t) / tol)))
    return Score(None, "final_state", ref.ratio, ref.residual, ref.tolerance, {}, ref.where), [
        Score("final_state_skipped", "final_state", worst, worst, 1.0, {})]


def _score_nan(ev: Evidence) -> tuple[Score, list[Score]] | None:
    bad = [o for o in ev.obs if not np.all(np.isfinite(o.x_prev)) and np.all(np.isfinite(o.x_t))]
    if not bad:
        return None
    ref = Score(None, "nan", math.inf, math.inf, 0.0, {}, _where(bad[0]))
    env = ev.env
    worst, where = 0.0, []
    for o in bad:
        s = o.t_prev
        a = float(env.alpha_bar[o.t])
        cp = 0.0 if s < 0 else float(env.one_minus[s])
        c = float(env.one_minus[o.t])
        bp = float(ref_alphas.one_minus_alpha_bar_ratio(env.betas, o.t, s)) if s >= -1 else 1.0
        var = o.eta**2 * cp / c * bp if env.conv.family == "ddim" else cp / c * bp
        radicands = [cp / c * bp, cp - var, a]
        scale = 64.0 * 2.0**-24
        smallest = min(abs(r) for r in radicands)
        worst = max(worst, smallest / scale)
        where.append(f"t={o.t} → {o.t_prev}" + (f", η={o.eta:g}" if env.conv.family == "ddim" else ""))
    return ref, [Score("unclamped_sqrt_nan", "nan", worst, worst * 64.0 * 2.0**-24, 64.0 * 2.0**-24,
                       {"where": "; ".join(sorted(set(where))[:3])})]


def _score_mutation(ev: Evidence) -> tuple[Score, list[Score]] | None:
    if not ev.mutated:
        return None
    return Score(None, "mutation", math.inf, 1.0, 0.0, {}, "x_t changed"), [
        Score("input_mutation", "mutation", 0.0, 0.0, 0.0, {})]


def score_patterns(ev: Evidence) -> list[tuple[Score, list[Score]]]:
    r"""Every kind of evidence with its reference score and the scores of its patterns (best first)."""
    out = []
    for fn in (_score_table, _score_final_state):
        got = fn(ev)
        if got is not None:
            out.append((got[0], _rank(got[1])))
    if ev.obs:
        ref, scores = score_step_patterns(ev)
        out.append((ref, _rank(scores)))
    for fn in (_score_timesteps, _score_model_t, _score_noise_reuse, _score_nan, _score_mutation):
        got = fn(ev)
        if got is not None:
            out.append((got[0], _rank(got[1])))
    return out


# -- the diagnosis ---------------------------------------------------------------------------------


def _explained(p: Pattern, failing: Sequence[str]) -> tuple[str, ...]:
    return tuple(n for n in failing if any(fnmatch.fnmatchcase(n, g) for g in p.explains))


def _groups_of(names: Sequence[str]) -> str:
    fams: dict[str, int] = {}
    for n in names:
        fam = n.split(".", 1)[0]
        fams[fam] = fams.get(fam, 0) + 1
    return ", ".join(f"{f}.*" for f in fams)


def _headline(p: Pattern, s: Score, explains: Sequence[str]) -> str:
    n = len(explains)
    what = f"this explains {n} failing check{'s' if n != 1 else ''} ({_groups_of(explains)})" if n else \
        "this explains no failing check by name"
    if s.evidence == "step" and s.tolerance and math.isfinite(s.tolerance) and s.tolerance != Z_CRIT:
        fit = f"residual after the fix {s.residual:.2g} ≤ tolerance {s.tolerance:.2g}"
    elif s.tolerance == Z_CRIT:
        fit = f"noise residuals consistent (|z| = {s.residual:.2g} ≤ {Z_CRIT:.3g})"
    elif s.evidence == "table":
        fit = f"relative residual after the fix {s.residual:.2g} ≤ tolerance {s.tolerance:.2g}"
    else:
        fit = "matches exactly"
    return f"{p.headline(s.parameters)}; {what}; {fit}"


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in ("declared", "destination", "fitted", "used", "where")}


def _with_table(ev: Evidence) -> Env:
    """The evidence's Env with the target's own ᾱ table in place of the reference's."""
    env = ev.env
    assert ev.table is not None
    table = ev.table
    prev = np.concatenate([[1.0], table[:-1]])
    with np.errstate(all="ignore"):
        betas = np.where(prev > 0, 1.0 - table / np.where(prev > 0, prev, 1.0), 1.0)
    return Env(env.conv, betas, table.copy(), 1.0 - table, raw=True)


def diagnose_evidence(ev: Evidence, failing: Sequence[str]) -> tuple[Diagnosis, ...]:
    r"""The diagnosis of ``failing`` from ``ev``: one entry per explained root cause, and one
    "no known pattern" entry for the failing checks none explains (with the closest pattern).

    A table pattern that explains the target's ᾱ table also explains the step failures when the
    reference step evaluated on the target's own table fits the transitions; NaN outputs are then its
    consequence too, not an unclamped square root's.
    """
    by_name = {p.name: p for p in CATALOGUE}
    found: list[Diagnosis] = []
    covered: set[str] = set()
    closest: tuple[float, Score] | None = None
    table_explains = False
    explaining: list[Score] = []
    for ref, scores in score_patterns(ev):
        if not scores:
            continue
        best = scores[0]
        explains_ok = ref.ratio > 1.0 and best.ratio <= 1.0 and ref.ratio >= BEAT_FACTOR * best.ratio
        if not explains_ok or best.pattern is None:
            if ref.ratio > 1.0 and (closest is None or best.ratio < closest[0]):
                closest = (best.ratio, best)
            continue
        explaining.append(best)
    # the table first (a wrong table explains the steps it feeds); then, across every kind of evidence, a
    # pattern with no fitted parameter before a fitted one (the simpler explanation: noise shared across the
    # batch is `noise_reused`, though a fitted noise scale can also square the chi-square of its residuals),
    # then the smaller ratio
    explaining.sort(key=lambda s: (s.evidence != "table", bool(by_name[s.pattern].fitted), s.ratio))
    for best in explaining:
        if best.evidence == "nan" and table_explains:
            continue
        p = by_name[best.pattern]
        explains = _explained(p, failing)
        if best.evidence == "table" and ev.obs:
            table_explains = True
            own = _score_transitions(_with_table(ev), ev.obs, Knobs(), None, {})
            if own.ratio <= 1.0:
                step_pattern = by_name["prev_timestep_minus_one"]
                explains = explains + tuple(n for n in _explained(step_pattern, failing) if n not in explains)
                explains = explains + tuple(n for n in failing if n.startswith("invariants.finite") and n not in explains)
        if best.evidence == "step" and table_explains:
            continue
        explains = tuple(n for n in explains if n not in covered)
        if not explains:
            continue
        covered.update(explains)
        found.append(Diagnosis(pattern=p.name, headline=_headline(p, best, explains),
                               parameters=_clean(best.parameters), explains=explains,
                               residual=best.residual, tolerance=best.tolerance, source=p.source))
    rest = tuple(n for n in failing if n not in covered)
    if rest and (not found or _numeric(rest)):
        head = f"no known pattern explains {len(rest)} failing check{'s' if len(rest) != 1 else ''} ({_groups_of(rest)})"
        if closest is not None:
            s = closest[1]
            p = by_name.get(s.pattern or "")
            if p is not None:
                head += (f"; closest: {p.name} ({p.headline(s.parameters)}), residual {s.residual:.3g} "
                         f"vs tolerance {s.tolerance:.3g}")
            found.append(Diagnosis(pattern=None, headline=head, parameters={}, explains=rest,
                                   residual=s.residual, tolerance=s.tolerance, closest=s.pattern))
        else:
            found.append(Diagnosis(pattern=None, headline=head, parameters={}, explains=rest))
    return tuple(found)


def _numeric(names: Sequence[str]) -> bool:
    return any(n.split(".", 1)[0] in ("single_step", "oracle", "distribution", "coefficients", "loop", "schedule",
                                      "timesteps")
               for n in names)


def diagnose(report: Any, ctx: Any) -> tuple[Diagnosis, ...]:
    r"""The diagnosis of a report's failures: drive ``ctx.sampler`` once more (:func:`collect_evidence`),
    score the catalogue, and name each root cause.

    Empty when nothing failed, and when the target cannot be driven again: it hung during the checks
    (driving it would wait for the timeout again), its conventions or tables cannot be read, or driving
    it raised. The checks' own messages and the root-error headlines say why; the diagnosis adds
    nothing it did not measure.
    """
    failed = [r for r in report.checks if r.verdict is Verdict.FAIL]
    failing = [r.name for r in failed]
    if not failing or any("timed out" in r.message for r in failed):
        return ()
    try:
        ev = collect_evidence(ctx, failing)
        if isinstance(ev, str):
            return ()
        return diagnose_evidence(ev, failing)
    except Exception:  # noqa: BLE001 - diagnosis is advice: it never breaks a report
        return ()
