r"""The catalogue: known bug patterns and convention variants, each a perturbation of the reference step.

Every entry is a :class:`Pattern`: a name, a one-line headline template, where the pattern comes from
(a paper's equation, or a known bug in a real library: ``/work/shared/anchors.md``), the checks it
explains, and the evidence it is judged on. Patterns judged on transitions carry :class:`Knobs`, a
change to one piece of the reference step; :func:`perturbed_step` evaluates the step with those knobs,
in float64, exactly like the reference: given the declared conventions, the tables, N, (t, t_prev) and
the step's inputs (x_t, the model output, the noise), it returns the expected mean and σ.

Reference step (the knobs at their defaults), 0-based index t, ᾱ = 1 at t_prev = −1 (docs/conventions.md),
:math:`a = \bar\alpha_t`, :math:`p = \bar\alpha_{t_\mathrm{prev}}`, :math:`\beta' = 1 - a/p`:

.. math::

    \hat x_0 = \frac{x_t - \sqrt{1-a}\,\epsilon}{\sqrt a}\ (\text{Ho et al. 2020, eq. 15}),\qquad
    \text{DDIM: } x_{t_\mathrm{prev}} = \sqrt p\,\hat x_0 + \sqrt{1-p-\sigma^2}\,\hat\epsilon + \sigma z,\quad
    \sigma^2 = \eta^2\frac{1-p}{1-a}\beta'\ (\text{Song et al. 2021, eq. 12, 16})

.. math::

    \text{DDPM: } x_{t_\mathrm{prev}} = \frac{\sqrt p\,\beta'}{1-a}\hat x_0 + \frac{\sqrt{1-\beta'}(1-p)}{1-a}x_t + \sigma z,
    \quad \sigma^2 = \tilde\beta' = \frac{1-p}{1-a}\beta' \text{ or } \beta'\ (\text{Ho et al. 2020, eq. 7; Algorithm 2})
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from ddspec.reference import alphas as ref_alphas
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES

from ..protocol import Conventions

__all__ = [
    "Knobs",
    "Env",
    "Obs",
    "Prediction",
    "Pattern",
    "CATALOGUE",
    "pattern_named",
    "perturbed_step",
    "make_env",
]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Knobs:
    r"""One perturbation of the reference step; every field at its default is the reference.

    Attributes:
        prev: which ᾱ_prev the step uses: ``"declared"`` (the next timestep of the run), ``"stride"``
            (t − ⌊T/N⌋, diffusers' DDIM for every spacing) or ``"minus_one"`` (t − 1).
        final: the last step's destination: None (declared), ``"abar0"`` (ᾱ at index 0) or ``"one"``.
        abar_shift: read ᾱ[t − 1] where ᾱ[t] belongs (a 1-based t on a 0-based table; −1 wraps).
        x0: ``"ref"``, ``"missing_sqrt"`` (1 − ᾱ for √(1 − ᾱ)), ``"alpha"`` (α_t = 1 − β_t for ᾱ_t)
            or ``"v_sign"`` (v read with the opposite sign).
        clip: ``"declared"``, ``"none"`` (never clamped) or ``"range"`` (clamped to ±clip_range).
        clip_range: the range of ``clip="range"``.
        rederive: re-derive ε̂ from the clipped x̂₀ (DDIM); None: as declared.
        sigma: ``"ref"``, ``"from_beta"`` (the one-step β_t for β'), ``"squared_as_sigma"`` (DDIM
            direction √(1 − p − σ)), ``"without_sigma"`` (DDIM direction √(1 − p)), ``"zero"`` (η
            ignored), ``"beta"`` (DDPM σ² = β' where β̃' is declared), ``"beta_tilde"`` (the reverse),
            ``"beta_t"`` (DDPM σ² = β_t of the training schedule).
        mean: ``"ref"``, ``"unrespaced"`` (DDPM eq. 7 with β_t for β') or ``"swapped"`` (the two
            posterior coefficients exchanged).
        learned_fraction: ``"ref"`` ((v + 1)/2) or ``"unshifted"`` (v itself).
        noise_scale: the factor on σ.
        final_sigma: σ of noise added on the last step (None: none, as the reference).
    """

    prev: str = "declared"
    final: str | None = None
    abar_shift: bool = False
    x0: str = "ref"
    clip: str = "declared"
    clip_range: float = 1.0
    rederive: bool | None = None
    sigma: str = "ref"
    mean: str = "ref"
    learned_fraction: str = "ref"
    noise_scale: float = 1.0
    final_sigma: float | None = None


@dataclass(frozen=True)
class Env:
    r"""The declared conventions and the tables a pattern is evaluated against: the reference's, or
    (``raw=True``) a target's own ᾱ table, whose ratios are then formed directly as 1 − ᾱ_t/ᾱ_prev."""

    conv: Conventions
    betas: Array
    alpha_bar: Array
    one_minus: Array
    raw: bool = False
    _ratios: dict[tuple[int, int], float] = field(default_factory=dict, compare=False, repr=False)

    @property
    def T(self) -> int:
        return int(self.conv.num_train_timesteps)


def make_env(conv: Conventions, betas: Array) -> Env:
    """The :class:`Env` of the declared schedule ``betas`` (float64)."""
    return Env(conv, betas, ref_alphas.alpha_bar(betas), ref_alphas.one_minus_alpha_bar(betas))


@dataclass(frozen=True)
class Obs:
    r"""One recorded transition: the target stepped ``x_t`` at ``t`` of an N-step run and returned ``x_prev``.

    ``t_prev`` is the declared destination (the next timestep of the run, −1 after the last);
    ``noise`` the injected z (None when the target drew its own: loop targets); ``last`` whether it
    is the run's last step.
    """

    t: int
    t_prev: int
    num_steps: int
    eta: float
    x_t: Array
    model_output: Array
    x_prev: Array
    noise: Array | None = None
    predicted_variance: Array | None = None
    last: bool = False
    step: int = 0
    bound: Array | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Prediction:
    r"""What a pattern expects of one transition: the mean, the σ of its noise term, and M, the
    magnitude of the expression (the sum of the absolute values of its terms), for the rounding allowance
    of the float64 evaluation itself."""

    mean: Array
    sigma: Array
    magnitude: Array


def _abar(env: Env, i: int, knobs: Knobs) -> float:
    if knobs.abar_shift:
        return 1.0 if i < 0 else float(env.alpha_bar[i - 1])  # at i = 0 this wraps to ᾱ[T − 1]: the bug
    return 1.0 if i < 0 else float(env.alpha_bar[i])


def _one_minus(env: Env, i: int, knobs: Knobs) -> float:
    if knobs.abar_shift:
        return 1.0 - _abar(env, i, knobs)
    return 0.0 if i < 0 else float(env.one_minus[i])


def _destination(env: Env, obs: Obs, knobs: Knobs) -> int:
    """The index whose ᾱ the step goes to under the knobs (−1: ᾱ = 1)."""
    declared = "one" if env.conv.final_alpha_bar_is_one else "abar0"
    final = declared
    if knobs.final == "flip":
        final = "abar0" if declared == "one" else "one"
    elif knobs.final is not None:
        final = knobs.final
    if knobs.prev == "declared":
        if obs.last:
            return -1 if final == "one" else 0
        return obs.t_prev
    s = obs.t - env.T // obs.num_steps if knobs.prev == "stride" else obs.t - 1
    if s < 0:
        return -1 if final == "one" else 0
    return s


def _beta_prime(env: Env, t: int, s: int, knobs: Knobs) -> float:
    if knobs.abar_shift or env.raw:
        return 1.0 - _abar(env, t, knobs) / _abar(env, s, knobs)
    key = (t, s)
    if key not in env._ratios:
        env._ratios[key] = float(ref_alphas.one_minus_alpha_bar_ratio(env.betas, t, s))
    return env._ratios[key]


def _clip(env: Env, x0: Array, knobs: Knobs) -> tuple[Array, bool]:
    conv = env.conv
    if knobs.clip == "none":
        return x0, False
    if knobs.clip == "range":
        return np.clip(x0, -knobs.clip_range, knobs.clip_range), True
    if conv.thresholding:
        from ddspec.reference import thresholding

        out = thresholding.dynamic_threshold(x0, conv.dynamic_thresholding_ratio, conv.sample_max_value)
        return np.asarray(out, dtype=np.float64), True
    if conv.clip_sample:
        return np.clip(x0, -conv.clip_sample_range, conv.clip_sample_range), True
    return x0, False


def perturbed_step(env: Env, obs: Obs, knobs: Knobs) -> Prediction:
    r"""The step ``obs.t → obs.t_prev`` of the declared conventions with ``knobs`` applied (float64).

    Returns the mean (everything but the noise term), σ (per element) and the magnitude M. See the
    module docstring for the equations; :class:`Knobs` for each perturbation.
    """
    conv = env.conv
    t = obs.t
    s = _destination(env, obs, knobs)
    a, c = _abar(env, t, knobs), _one_minus(env, t, knobs)
    p, cp = _abar(env, s, knobs), _one_minus(env, s, knobs)
    x, m = obs.x_t, obs.model_output
    sa, sc = math.sqrt(max(a, 0.0)), math.sqrt(max(c, 0.0))
    kind = conv.prediction_type
    if kind == "epsilon":
        if knobs.x0 == "alpha":
            al = 1.0 - float(env.betas[t])
            x0 = (x - math.sqrt(1.0 - al) * m) / math.sqrt(al)
        elif knobs.x0 == "missing_sqrt":
            x0 = (x - c * m) / sa
        else:
            x0 = (x - sc * m) / sa
        eps = m
        mag_x0 = (np.abs(x) + sc * np.abs(m)) / sa
    elif kind == "sample":
        x0 = m
        eps = (x - sa * x0) / sc if sc > 0 else np.zeros_like(x)
        mag_x0 = np.abs(m)
    else:
        sign = -1.0 if knobs.x0 == "v_sign" else 1.0
        x0 = sa * x - sign * sc * m
        eps = sc * x + sign * sa * m
        mag_x0 = sa * np.abs(x) + sc * np.abs(m)
    x0, clipped = _clip(env, x0, knobs)
    rederive = conv.use_clipped_model_output if knobs.rederive is None else knobs.rederive
    if clipped and conv.family == "ddim" and rederive and sc > 0:
        eps = (x - sa * x0) / sc
    zero = np.zeros_like(x)
    if conv.family == "ddim":
        bp = _beta_prime(env, t, s, knobs)
        if knobs.sigma == "from_beta":
            bp = float(env.betas[t])
        var = 0.0 if knobs.sigma == "zero" else obs.eta**2 * cp / c * bp if c > 0 else 0.0
        sigma = math.sqrt(max(var, 0.0))
        if knobs.sigma == "squared_as_sigma":
            dir_sq = cp - sigma
        elif knobs.sigma == "without_sigma":
            dir_sq = cp
        else:
            dir_sq = cp - var
        d = math.sqrt(max(dir_sq, 0.0))
        mean = math.sqrt(max(p, 0.0)) * x0 + d * eps
        mag = math.sqrt(max(p, 0.0)) * mag_x0 + d * np.abs(eps)
        sig = zero + sigma * knobs.noise_scale
    else:
        bp = _beta_prime(env, t, s, knobs)
        if knobs.mean == "unrespaced":
            bp = float(env.betas[t])
        c0 = math.sqrt(max(p, 0.0)) * bp / c
        cx = math.sqrt(max(1.0 - bp, 0.0)) * cp / c
        if knobs.mean == "swapped":
            c0, cx = cx, c0
        mean = c0 * x0 + cx * x
        mag = abs(c0) * mag_x0 + abs(cx) * np.abs(x)
        tilde = cp / c * bp
        vt = conv.variance_type or "fixed_small"
        large = vt.startswith("fixed_large")
        if knobs.sigma == "beta":
            large = True
        elif knobs.sigma == "beta_tilde":
            large = False
        if vt in LEARNED_VARIANCE_TYPES and obs.predicted_variance is not None:
            v = obs.predicted_variance
            if vt == "learned":
                var_arr = v
            else:
                f = v if knobs.learned_fraction == "unshifted" else (v + 1.0) / 2.0
                with np.errstate(divide="ignore", invalid="ignore"):
                    var_arr = np.exp(f * math.log(bp) + (1.0 - f) * math.log(tilde)) if tilde > 0 else zero
        elif knobs.sigma == "beta_t":
            var_arr = zero + float(env.betas[t])
        elif knobs.sigma == "from_beta":
            var_arr = zero + (1.0 if large else cp / c) * float(env.betas[t])
        else:
            var_arr = zero + (bp if large else tilde)
        sig = np.sqrt(np.maximum(var_arr, 0.0)) * knobs.noise_scale
        if s < 0:
            sig = zero
    if obs.last and knobs.final_sigma is not None:
        sig = zero + knobs.final_sigma
    return Prediction(mean=mean, sigma=np.asarray(sig, dtype=np.float64), magnitude=mag)


# -- the catalogue ---------------------------------------------------------------------------------


def _always(conv: Conventions) -> bool:
    return True


def _ddim(conv: Conventions) -> bool:
    return conv.family == "ddim"


def _ddpm(conv: Conventions) -> bool:
    return conv.family == "ddpm"


@dataclass(frozen=True)
class Pattern:
    r"""One known bug pattern or convention variant.

    Attributes:
        name: the id (JSON ``diagnosis[].pattern``).
        title: the headline, a template formatted with the fitted parameters (``{factor:.4g}``).
        source: the paper and equation it breaks, or the known library bug.
        explains: the check names (``fnmatch`` patterns) it makes fail.
        evidence: what it is judged on: ``"step"`` (recorded transitions, deterministic residual or
            noise likelihood), ``"table"`` (the target's ᾱ table), ``"timesteps"`` (the target's
            sequence), ``"model_t"`` (the t the loop passes its model), ``"noise_reuse"``,
            ``"final_state"`` (a loop's return value), ``"nan"``, ``"mutation"``.
        knobs: the perturbation (``"step"`` evidence), else None.
        applies: whether the pattern can occur under the declared conventions.
        fitted: the names of the parameters the fit determines.
        targets: the target kinds it applies to.
    """

    name: str
    title: str
    source: str
    explains: tuple[str, ...]
    evidence: str
    knobs: Knobs | None = None
    applies: Callable[[Conventions], bool] = _always
    fitted: tuple[str, ...] = ()
    targets: tuple[str, ...] = ("step", "loop")

    def headline(self, parameters: dict[str, Any]) -> str:
        """The title with the fitted parameters filled in."""
        try:
            return self.title.format(**parameters)
        except (KeyError, ValueError, IndexError):
            return self.title

    def predict(self, env: Env, obs: Obs, **parameters: Any) -> Prediction:
        """The expected transition under this pattern (``"step"`` evidence only)."""
        if self.knobs is None:
            raise ValueError(f"pattern={self.name!r}: judged on {self.evidence}, not on transitions")
        return perturbed_step(env, obs, replace(self.knobs, **parameters))


#: What a wrong step makes fail: the step, oracle, distribution and fitted-coefficient families, the loop's transition,
#: noise, final-step and output-law checks, and the two invariants that judge a step's numbers (a NaN
#: where the reference is finite, noise on the last step). Contract invariants (mutation, dtype,
#: determinism, global RNG, batch independence) are never explained by a wrong equation.
_STEP = ("single_step.*", "oracle.*", "distribution.*", "coefficients.*", "loop.steps*", "loop.noise*",
         "loop.final_step*", "loop.output_law*", "loop.coefficients*", "invariants.finite*", "invariants.no_final_noise*")

CATALOGUE: tuple[Pattern, ...] = (
    # -- timesteps and ᾱ_prev -------------------------------------------------------------------------
    Pattern("prev_timestep_stride",
            "ᾱ_prev is taken at t − T//N instead of at the next sampled timestep",
            "diffusers DDIMScheduler.step (0.42): prev_timestep = t − T//N for every timestep_spacing "
            "(docs/diffusers.md); DDIM eq. 12 needs the next timestep of the run",
            _STEP, "step", Knobs(prev="stride")),
    Pattern("prev_timestep_minus_one",
            "ᾱ_prev is taken at t − 1 instead of the previous sampled timestep",
            "DDIM eq. 12 / Ho et al. eq. 7 on a strided run: ᾱ_prev belongs to the next timestep of the run",
            _STEP, "step", Knobs(prev="minus_one")),
    Pattern("final_alpha_bar",
            "the last step goes to {destination} instead of the declared {declared}",
            "diffusers DDIMScheduler set_alpha_to_one (final_alpha_cumprod = ᾱ_0 or 1); DDIM eq. 12 at t = 1",
            _STEP, "step", Knobs(final="flip")),
    Pattern("alpha_bar_index_shift",
            "ᾱ is read one index early (ᾱ[t − 1] at t: a 1-based t on a 0-based table)",
            "docs/conventions.md: code t is the papers' t + 1; ᾱ[t] belongs to index t",
            _STEP, "step", Knobs(abar_shift=True)),
    Pattern("steps_offset_ignored",
            "the timesteps are shifted by {shift:+d}: steps_offset={used} is applied where steps_offset={declared} is declared",
            "diffusers leading spacing: arange(N)·(T//N) + steps_offset (Lin et al. 2023, Table 2)",
            ("timesteps.*", "loop.timesteps*"), "timesteps"),
    Pattern("timestep_count",
            "the run takes the timesteps of N{delta:+d} steps where N is asked",
            "the N-step subsequence of Song et al. 2021 §4.2 / Lin et al. 2023, Table 2",
            ("timesteps.*", "loop.timesteps*"), "timesteps"),
    Pattern("model_timestep_offset",
            "the model is called with {scale:.6g}·t {offset:+.6g} instead of the declared timestep",
            "improved-diffusion _WrappedModel (rescale_timesteps: t·1000/T); an off-by-one t + 1",
            ("loop.timesteps*", "loop.steps*", "loop.final_step*", "loop.noise*", "loop.output_law*",
             "loop.coefficients*"), "model_t",
            targets=("loop",)),
    # -- σ and noise -----------------------------------------------------------------------------------
    Pattern("sigma_from_beta",
            "σ² uses the one-step β_t instead of the respaced β' = 1 − ᾱ_t/ᾱ_prev",
            "DDIM eq. 16 (σ from ᾱ_t/ᾱ_prev); respacing: Nichol & Dhariwal 2021 §4",
            _STEP, "step", Knobs(sigma="from_beta")),
    Pattern("sigma_beta_t",
            "σ² = β_t of the training schedule instead of the declared variance of the respaced step",
            "Ho et al. 2020 Algorithm 2 with σ² = β_t used on a strided run (respacing: Nichol & Dhariwal 2021 §4)",
            _STEP, "step", Knobs(sigma="beta_t"), _ddpm),
    Pattern("sigma_squared_as_sigma",
            "the direction term subtracts σ where σ² belongs: √(1 − ᾱ_prev − σ)",
            "DDIM eq. 12: √(1 − ᾱ_prev − σ²)",
            _STEP, "step", Knobs(sigma="squared_as_sigma"), _ddim),
    Pattern("direction_without_sigma",
            "the direction term ignores σ: √(1 − ᾱ_prev) instead of √(1 − ᾱ_prev − σ²)",
            "DDIM eq. 12: √(1 − ᾱ_prev − σ²)",
            _STEP, "step", Knobs(sigma="without_sigma"), _ddim),
    Pattern("eta_ignored",
            "η is ignored: the step is deterministic (σ = 0) whatever η",
            "DDIM eq. 16: σ = η√β̃'",
            _STEP, "step", Knobs(sigma="zero"), _ddim),
    Pattern("final_step_noise",
            "noise of std {sigma_last:.4g} is added on the last step",
            "Ho et al. 2020 Algorithm 2, line 4: z = 0 at t = 1; improved-diffusion's nonzero_mask",
            _STEP, "step", Knobs(), fitted=("sigma_last",)),
    Pattern("noise_scale",
            "the noise std is {factor:.4g}× the declared σ",
            "Ho et al. 2020 Algorithm 2 / DDIM eq. 12: the noise term is σ z with z ~ N(0, I)",
            _STEP, "step", Knobs(), fitted=("factor",)),
    Pattern("noise_reused",
            "one noise draw is reused across {across}",
            "Ho et al. 2020 Algorithm 2, line 3: a fresh z ~ N(0, I) per step and per sample",
            ("loop.noise*", "loop.output_law*", "loop.coefficients*"), "noise_reuse", targets=("loop",)),
    Pattern("learned_range_unshifted",
            "the learned_range fraction is v itself instead of (v + 1)/2",
            "Nichol & Dhariwal 2021, eq. 15: v ∈ [−1, 1] mapped to (v + 1)/2",
            _STEP, "step", Knobs(learned_fraction="unshifted"),
            lambda conv: conv.family == "ddpm" and conv.variance_type == "learned_range"),
    # -- x̂₀ and the step's coefficients -------------------------------------------------------------
    Pattern("x0_clip_missing",
            "x̂₀ is not clipped although clip_sample=True is declared",
            "diffusers clip_sample: x̂₀ clamped to ±clip_sample_range before DDIM eq. 12 / Ho et al. eq. 7",
            _STEP, "step", Knobs(clip="none"), lambda conv: conv.clip_sample and not conv.thresholding),
    Pattern("x0_clip_unexpected",
            "x̂₀ is clipped to ±{clip_range:g} although no clipping is declared",
            "improved-diffusion / lucidrains clip_denoised=True (x̂₀ clamped to ±1) with clip_sample=False declared",
            _STEP, "step", Knobs(clip="range"), lambda conv: not conv.clip_sample and not conv.thresholding,
            fitted=("clip_range", "rederive")),
    Pattern("clip_range",
            "x̂₀ is clipped to ±{clip_range:g} instead of the declared ±{declared:g}",
            "diffusers clip_sample_range",
            _STEP, "step", Knobs(clip="range"), lambda conv: conv.clip_sample and not conv.thresholding,
            fitted=("clip_range",)),
    Pattern("x0_from_alpha",
            "x̂₀ uses α_t = 1 − β_t where ᾱ_t belongs",
            "Ho et al. 2020, eq. 15: x̂₀ = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t",
            _STEP, "step", Knobs(x0="alpha"), lambda conv: conv.prediction_type == "epsilon"),
    Pattern("x0_missing_sqrt",
            "x̂₀ uses 1 − ᾱ_t where √(1 − ᾱ_t) belongs",
            "Ho et al. 2020, eq. 15",
            _STEP, "step", Knobs(x0="missing_sqrt"), lambda conv: conv.prediction_type == "epsilon"),
    Pattern("v_sign",
            "v is read with the opposite sign: x̂₀ = √ᾱ x_t + √(1 − ᾱ) v",
            "Salimans & Ho 2022, §4: v = √ᾱ ε − √(1 − ᾱ) x₀, so x̂₀ = √ᾱ x_t − √(1 − ᾱ) v",
            _STEP, "step", Knobs(x0="v_sign"), lambda conv: conv.prediction_type == "v_prediction"),
    Pattern("beta_for_beta_tilde",
            "σ² = β' (fixed_large) where the declared fixed_small needs β̃' = β'(1 − ᾱ_prev)/(1 − ᾱ_t)",
            "Ho et al. 2020, eq. 7 and §3.2",
            _STEP, "step", Knobs(sigma="beta"),
            lambda conv: conv.family == "ddpm" and (conv.variance_type or "").startswith("fixed_small")),
    Pattern("beta_tilde_for_beta",
            "σ² = β̃' (fixed_small) where the declared fixed_large needs β'",
            "Ho et al. 2020, eq. 7 and §3.2",
            _STEP, "step", Knobs(sigma="beta_tilde"),
            lambda conv: conv.family == "ddpm" and (conv.variance_type or "").startswith("fixed_large")),
    Pattern("unrespaced_beta",
            "the posterior uses the one-step β_t instead of the respaced β' = 1 − ᾱ_t/ᾱ_prev",
            "Ho et al. 2020 eq. 7 on the respaced schedule (Nichol & Dhariwal 2021, §4)",
            _STEP, "step", Knobs(mean="unrespaced"), _ddpm),
    Pattern("posterior_coefficients_swapped",
            "the posterior-mean coefficients of x̂₀ and x_t are swapped",
            "Ho et al. 2020, eq. 7",
            _STEP, "step", Knobs(mean="swapped"), _ddpm),
    # -- tables ------------------------------------------------------------------------------------------
    Pattern("table_precision",
            "ᾱ is accumulated in {dtype} (cumprod of 1 − β in {dtype})",
            "Ho et al. 2020 §2: ᾱ_t = ∏(1 − β_i); a low-precision running product",
            ("schedule.*",), "table"),
    Pattern("schedule_parameter",
            "the schedule's parameters are {fitted} instead of the declared {declared}",
            "Nichol & Dhariwal 2021 eq. 17 (cosine s); Ho et al. 2020 §4 (linear β range)",
            ("schedule.*",), "table"),
    # -- robustness ------------------------------------------------------------------------------------
    Pattern("unclamped_sqrt_nan",
            "NaN from an unclamped √ of a difference that is 0 in exact arithmetic ({where})",
            "DDIM eq. 12/16 at ᾱ_prev = 1 or ᾱ_T = 0; diffusers zero-SNR η = 1 (docs/diffusers.md §5)",
            ("invariants.finite*", "single_step.*", "oracle.*", "distribution.*", "loop.run*"), "nan"),
    Pattern("input_mutation",
            "the step writes into its input x_t (the output is right, the input is overwritten)",
            "the Sampler protocol: a step must not modify its input tensors",
            ("invariants.no_input_mutation*", "loop.inputs_unchanged*"), "mutation"),
    Pattern("final_state_skipped",
            "the loop returns the state before its last step",
            "Ho et al. 2020 Algorithm 2, line 6: return x_0 after the last step",
            ("loop.final_step*", "loop.output_law*"), "final_state", targets=("loop",)),
)


def pattern_named(name: str) -> Pattern:
    """The catalogue entry called ``name``."""
    for p in CATALOGUE:
        if p.name == name:
            return p
    raise ValueError(f"pattern={name!r}: not in the catalogue ({', '.join(p.name for p in CATALOGUE)})")
