r"""openai/improved-diffusion and openai/guided-diffusion: ``GaussianDiffusion`` / ``SpacedDiffusion`` as loop targets.

One line for the user::

    ddspec check mypkg:diffusion            # adapt() recognises the object; p_sample_loop is checked

or, for DDIM and inversion, ``ddim_target(diffusion)`` / :func:`reverse_sample_target`.

**Why the loop route.** ``p_sample`` and ``ddim_sample`` draw their noise with ``th.randn_like`` inside
the call and take no noise tensor, so the step protocol could only be served by replacing torch's
global random function. Instead the adapter hands the library's own ``p_sample_loop`` /
``ddim_sample_loop`` the harness's probe as the model (a :class:`~.loop.LoopSampler`): every step the
library takes is recorded by the probe and judged against the reference, deterministic steps within
the error model and noisy ones statistically, with no cooperation from the library and nothing in
torch replaced. ``ddim_reverse_sample`` is deterministic: :func:`reverse_sample_target` records each of
its steps, and the ``adapter`` check family
(:func:`ddspec.conformance.checks.adapter_extras.check_reverse_sample`) compares each with the reference
inversion (:func:`ddspec.reference.inversion.ddim_invert_step`) on the recorded values.

**What the adapter reads** (every field that changes the numbers; the library is never imported, the
enums are read by their member ``name``):

* ``betas`` (float64 numpy) of a ``GaussianDiffusion``; for a ``SpacedDiffusion``, whose ``betas`` are
  the respaced β', the base table is identified from the kept ᾱ (the libraries' "linear"
  :math:`10^{-4}\cdot 1000/T \ldots 0.02\cdot 1000/T` or "cosine", Nichol & Dhariwal 2021 eq. 17),
  or passed as ``betas=``;
* ``model_mean_type``: EPSILON → ``"epsilon"``, START_X → ``"sample"``; PREVIOUS_X (the model predicts
  the posterior mean) has no ddspec prediction type and goes to ``unsupported``;
* ``model_var_type``: FIXED_SMALL → β̃, FIXED_LARGE → β (of the respaced schedule), LEARNED (the
  library reads the output as a **log** variance: the adapter passes the log of the probe's variance),
  LEARNED_RANGE (the fraction v, eq. 15 of Nichol & Dhariwal);
* ``timestep_map``, ``original_num_steps`` (respacing) and ``rescale_timesteps`` (the model sees
  :math:`t \cdot 1000/T`, declared with ``model_timestep``);
* ``loss_type`` is read and ignored (training only); any other instance attribute goes to
  ``unsupported``, never to a default.

Declared conventions (shown in the report's notes): per-step coefficients rounded to float32 over
float64 tables (``_extract_into_tensor(...).float()``, ``coefficient_dtype=torch.float32``); x̂₀
clamped to [−1, 1] (``clip_denoised=True``, the libraries' default) and, for DDIM, ε̂ re-derived from
x̂₀ (``use_clipped_model_output``); noise from the global RNG; the timesteps of ``space_timesteps``:
"a,b,c" sections at a fractional stride rounded with Python's ``round``, or "ddimN", the smallest
integer stride giving exactly N steps (:func:`section_timesteps`, :func:`ddim_stride_timesteps`,
stated here from the documented rule, independently of the library's function).

Index convention (``docs/conventions.md``): t is the 0-based index of the original T-step process; the
step after the last goes to −1 (ᾱ = 1): ``alphas_cumprod_prev`` starts with 1.0.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference import schedules
from ddspec.reference.validation import as_int
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES

from ..protocol import Conventions
from ..records import StepRecord, dtype_name
from ..trajectory import Transition
from .loop import LoopSampler

__all__ = [
    "is_gaussian_diffusion",
    "section_timesteps",
    "ddim_stride_timesteps",
    "ImprovedDiffusionReading",
    "read_diffusion",
    "p_sample_target",
    "ddim_target",
    "ReverseSampleInversion",
    "reverse_sample_target",
]

#: Instance attributes of GaussianDiffusion / SpacedDiffusion that the adapter understands.
_KNOWN_FIELDS = frozenset({
    "model_mean_type", "model_var_type", "loss_type", "rescale_timesteps", "betas", "num_timesteps",
    "alphas_cumprod", "alphas_cumprod_prev", "alphas_cumprod_next", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "use_timesteps", "timestep_map", "original_num_steps",
})
_MEAN_TYPES = {"EPSILON": "epsilon", "START_X": "sample"}
_VAR_TYPES = {"FIXED_SMALL": "fixed_small", "FIXED_LARGE": "fixed_large", "LEARNED": "learned",
              "LEARNED_RANGE": "learned_range"}
_LOSS_TYPES = frozenset({"MSE", "RESCALED_MSE", "KL", "RESCALED_KL"})


def is_gaussian_diffusion(obj: object) -> bool:
    """Duck-typed: an improved-/guided-diffusion ``GaussianDiffusion`` (or ``SpacedDiffusion``) instance."""
    return (not isinstance(obj, type)
            and all(hasattr(obj, a) for a in ("betas", "model_mean_type", "model_var_type", "num_timesteps",
                                              "alphas_cumprod_prev", "posterior_log_variance_clipped"))
            and all(callable(getattr(obj, m, None)) for m in ("p_sample_loop", "ddim_sample_loop", "p_mean_variance")))


# -- the timestep rules of space_timesteps, stated from their documentation ------------------------------


def section_timesteps(T: int, counts: list[int]) -> list[int]:
    r"""The kept indices of ``space_timesteps(T, "c_1,c_2,…")``, noisiest first.

    T is split into ``len(counts)`` sections, the first ``T mod len(counts)`` one index longer; section
    i (size :math:`S_i`, start :math:`o_i`) keeps :math:`o_i + \mathrm{round}(\sum_{j<k} s_i)`,
    k = 0..c_i−1, with the fractional stride :math:`s_i = (S_i-1)/(c_i-1)` (1 when :math:`c_i \le 1`)
    accumulated in float64 and Python's round (half to even) — Nichol & Dhariwal 2021 §4's respacing.
    Raises ``ValueError`` naming ``counts`` when a section is shorter than its count.
    """
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"counts={counts!r}: must be a non-empty list of section counts >= 1")
    size_per, extra = divmod(T, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"counts={counts!r}: section {i} has {size} steps, fewer than its count {count}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept), reverse=True)


def ddim_stride(T: int, n: int) -> int | None:
    """The smallest integer stride k in [1, T) with exactly ``n`` indices in ``range(0, T, k)``, or None."""
    for k in range(1, T):
        if -(-T // k) == n:
            return k
    return None


def ddim_stride_timesteps(T: int, n: int) -> list[int]:
    """``space_timesteps(T, "ddimN")``: ``range(0, T, k)`` for the smallest k giving exactly N steps, noisiest first."""
    k = ddim_stride(T, n)
    if k is None:
        raise ValueError(f"num_steps={n}: no integer stride gives exactly {n} of T={T} steps ('ddim{n}' raises)")
    return list(range(0, T, k))[::-1]


def _parse_respacing(respacing: str) -> tuple[str, list[int] | None]:
    """("ddim", None) | ("template", None) for "{}" | ("fixed", counts) for "10,15,20"."""
    if respacing == "ddim{}":
        return "ddim", None
    if respacing == "{}":
        return "template", None
    try:
        counts = [int(c) for c in respacing.split(",")]
    except ValueError:
        raise ValueError(f"respacing={respacing!r}: must be '{{}}', 'ddim{{}}' or section counts such as '10,15,20'") from None
    return "fixed", counts


# -- reading the object --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImprovedDiffusionReading:
    r"""What the adapter read from a diffusion object.

    Attributes:
        T: the original number of steps (``original_num_steps`` or ``num_timesteps``).
        base_betas: the float64 β table of the original process (length T).
        schedule_note: how the table was obtained (read, identified, or given).
        prediction_type, variance_type: ddspec names (``"previous_x"`` when unsupported).
        rescale_timesteps: the model sees :math:`t\cdot 1000/T`.
        kept: the object's own kept indices, noisiest first.
        respacing: ``"{}"``, ``"ddim{}"`` or a fixed section string: the rule the object's ``kept`` follows.
        unsupported: ``"<field>=<value>: why"`` entries.
    """

    T: int
    base_betas: NDArray[np.float64]
    schedule_note: str
    prediction_type: str
    variance_type: str
    rescale_timesteps: bool
    kept: tuple[int, ...]
    respacing: str
    unsupported: tuple[str, ...]


def _enum_name(value: Any) -> str:
    return str(getattr(value, "name", value))


def _identify_base(obj: Any, T: int, kept: list[int]) -> tuple[NDArray[np.float64], str] | None:
    ab = np.asarray(obj.alphas_cumprod, dtype=np.float64)
    order = sorted(kept)
    candidates = (("linear", schedules.linear_betas(T, 1e-4 * 1000 / T, 0.02 * 1000 / T)),
                  ("cosine", schedules.cosine_betas(T)))
    for name, betas in candidates:
        if np.allclose(np.cumprod(1.0 - betas)[order], ab, rtol=1e-9, atol=0.0):
            return betas, f"the kept ᾱ match the libraries' '{name}' schedule (T={T}), used as the base table"
    return None


def read_diffusion(obj: Any, *, betas: Any = None) -> ImprovedDiffusionReading:
    r"""Read a ``GaussianDiffusion`` / ``SpacedDiffusion`` (see the module docstring).

    Raises:
        TypeError: ``obj`` is not such an object.
        ValueError: a SpacedDiffusion whose base schedule is neither of the libraries' named ones and
            no ``betas=`` was given; a ``betas`` of the wrong length.
    """
    if not is_gaussian_diffusion(obj):
        raise TypeError(f"read_diffusion: {type(obj).__qualname__} is not an improved-/guided-diffusion GaussianDiffusion")
    spaced = hasattr(obj, "timestep_map") and hasattr(obj, "original_num_steps")
    T = int(obj.original_num_steps) if spaced else int(obj.num_timesteps)
    kept = [int(t) for t in obj.timestep_map] if spaced else list(range(T))
    if betas is not None:
        base = np.array(betas, dtype=np.float64)
        if base.shape != (T,):
            raise ValueError(f"betas: must have shape ({T},), the original process's length, got {base.shape}")
        note = "β: the table passed as betas="
    elif not spaced or kept == list(range(T)):
        base = np.array(obj.betas, dtype=np.float64)
        note = "β: the object's own float64 table"
    else:
        found = _identify_base(obj, T, kept)
        if found is None:
            raise ValueError(f"betas=None: the SpacedDiffusion's kept ᾱ match neither the 'linear' nor the 'cosine' "
                             f"schedule of T={T}; pass the base table with betas=")
        base, note = found
    unsupported: list[str] = []
    mean_name = _enum_name(obj.model_mean_type)
    prediction = _MEAN_TYPES.get(mean_name)
    if prediction is None:
        prediction = mean_name.lower()
        why = ("the model predicts the posterior mean x_{t-1}; ddspec has no such prediction type"
               if mean_name == "PREVIOUS_X" else "not a ModelMeanType ddspec knows")
        unsupported.append(f"prediction_type={prediction}: model_mean_type={mean_name}: {why}")
    var_name = _enum_name(obj.model_var_type)
    variance = _VAR_TYPES.get(var_name)
    if variance is None:
        variance = var_name.lower()
        unsupported.append(f"variance_type={variance}: model_var_type={var_name} is not a ModelVarType ddspec knows")
    if _enum_name(obj.loss_type) not in _LOSS_TYPES:
        unsupported.append(f"loss_type={_enum_name(obj.loss_type)}: not a LossType ddspec knows")
    rescale = getattr(obj, "rescale_timesteps", False)
    if not isinstance(rescale, bool):
        unsupported.append(f"rescale_timesteps={rescale!r}: must be a bool")
        rescale = bool(rescale)
    for field in sorted(set(vars(obj)) - _KNOWN_FIELDS):
        shown = repr(getattr(obj, field))
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        unsupported.append(f"{field}={shown}: not a field of improved-diffusion's GaussianDiffusion; "
                           "ddspec cannot tell whether it changes the numbers")
    n = len(kept)
    if kept == list(range(T)) or section_timesteps(T, [n]) == sorted(kept, reverse=True):
        respacing = "{}"
    elif ddim_stride(T, n) is not None and ddim_stride_timesteps(T, n) == sorted(kept, reverse=True):
        respacing = "ddim{}"
    else:
        respacing = "fixed"
    return ImprovedDiffusionReading(T, base, note, prediction, variance, rescale,
                                    tuple(sorted(kept, reverse=True)), respacing, tuple(unsupported))


def _library_member(obj: Any, name: str) -> Any:
    """``name`` from the module of ``obj``'s class or its sibling ``respace`` module (imported lazily), or None."""
    for cls in type(obj).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is not None and hasattr(module, name):
            return getattr(module, name)
        package = cls.__module__.rpartition(".")[0]
        if package:
            with contextlib.suppress(ImportError):
                sibling = importlib.import_module(package + ".respace")
                if hasattr(sibling, name):
                    return getattr(sibling, name)
    return None


# -- the targets -------------------------------------------------------------------------------------------


class _Driver:
    """Builds the library's diffusion for each N and runs its loop with the harness's model."""

    def __init__(self, obj: Any, reading: ImprovedDiffusionReading, respacing: str, clip_denoised: bool) -> None:
        self.obj, self.reading, self.clip_denoised = obj, reading, clip_denoised
        self.kind, self.counts = _parse_respacing(respacing) if respacing != "fixed" else ("own", None)
        spaced_cls = type(obj) if hasattr(obj, "timestep_map") else _library_member(obj, "SpacedDiffusion")
        self.spaced_cls = spaced_cls
        self.space_timesteps = _library_member(obj, "space_timesteps")
        self._cache: dict[int, Any] = {}

    # declarations
    def timesteps(self, n: int) -> list[int]:
        if self.kind == "ddim":
            return ddim_stride_timesteps(self.reading.T, n)
        if self.kind == "template":
            return section_timesteps(self.reading.T, [n])
        if self.kind == "fixed" and self.counts is not None:
            return section_timesteps(self.reading.T, self.counts)
        return list(self.reading.kept)

    def supports(self, n: int) -> bool:
        if n < 2:  # posterior_variance[1] of a one-step process: the library's __init__ raises IndexError
            return False
        own = len(self.reading.kept)
        if self.kind == "fixed" and self.counts is not None:
            return n == sum(self.counts)
        if n == own:
            return True
        if self.spaced_cls is None or self.space_timesteps is None or self.kind == "own":
            return False
        if self.kind == "ddim":
            return ddim_stride(self.reading.T, n) is not None
        return 1 <= n <= self.reading.T

    def section_string(self, n: int) -> str:
        if self.kind == "ddim":
            return f"ddim{n}"
        if self.kind == "fixed" and self.counts is not None:
            return ",".join(str(c) for c in self.counts)
        return str(n)

    def diffusion(self, n: int) -> Any:
        if n == len(self.reading.kept) and (self.kind == "own" or self.timesteps(n) == list(self.reading.kept)):
            return self.obj
        if n not in self._cache:
            o = self.obj
            self._cache.clear()
            self._cache[n] = self.spaced_cls(
                use_timesteps=self.space_timesteps(self.reading.T, self.section_string(n)),
                betas=self.reading.base_betas, model_mean_type=o.model_mean_type, model_var_type=o.model_var_type,
                loss_type=o.loss_type, rescale_timesteps=o.rescale_timesteps)
        return self._cache[n]

    def model(self, probe: Callable, channels: int, ddim: bool) -> Callable:
        var = self.reading.variance_type

        def model(x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            out = probe(x, t, **kwargs)
            if ddim and var in LEARNED_VARIANCE_TYPES:  # DDIM ignores the variance half
                return torch.cat([out, torch.zeros_like(out)], dim=1)
            if var == "learned":  # the probe gives a variance, the library reads a log variance
                pred, variance = out.split(channels, dim=1)
                return torch.cat([pred, torch.log(variance)], dim=1)
            return out

        return model

    def p_sample_loop(self, probe: Callable, x_T: torch.Tensor, num_steps: int) -> torch.Tensor:
        diffusion = self.diffusion(num_steps)
        return diffusion.p_sample_loop(self.model(probe, x_T.shape[1], False), tuple(x_T.shape), noise=x_T,
                                       clip_denoised=self.clip_denoised, device=x_T.device)

    def ddim_sample_loop(self, probe: Callable, x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0) -> torch.Tensor:
        diffusion = self.diffusion(num_steps)
        return diffusion.ddim_sample_loop(self.model(probe, x_T.shape[1], True), tuple(x_T.shape), noise=x_T,
                                          clip_denoised=self.clip_denoised, device=x_T.device, eta=eta)


def _conventions(reading: ImprovedDiffusionReading, family: str, clip_denoised: bool) -> Conventions:
    unsupported = tuple(u for u in reading.unsupported
                        if family == "ddpm" or not u.startswith("variance_type="))
    return Conventions(
        family=family, num_train_timesteps=reading.T, beta_schedule="custom",
        trained_betas=tuple(float(b) for b in reading.base_betas),
        prediction_type=reading.prediction_type,
        variance_type=reading.variance_type if family == "ddpm" else None,
        timestep_spacing="custom", clip_sample=clip_denoised,
        use_clipped_model_output=family == "ddim", supports_noise_injection=False, unsupported=unsupported)


def _target(obj: Any, family: str, *, respacing: str | None, clip_denoised: bool, betas: Any) -> LoopSampler:
    if not isinstance(clip_denoised, bool):
        raise ValueError(f"clip_denoised={clip_denoised!r}: must be a bool")
    reading = read_diffusion(obj, betas=betas)
    rule = reading.respacing if respacing is None else respacing
    if respacing is not None:
        _parse_respacing(respacing)
    driver = _Driver(obj, reading, rule, clip_denoised)
    conv = _conventions(reading, family, clip_denoised)
    T = reading.T
    if family == "ddpm":
        def sample(model: Callable, x_T: torch.Tensor, num_steps: int) -> torch.Tensor:
            return driver.p_sample_loop(model, x_T, num_steps)
    else:
        def sample(model: Callable, x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0) -> torch.Tensor:  # type: ignore[misc]
            return driver.ddim_sample_loop(model, x_T, num_steps, eta=eta)
    def supported(n: int) -> bool:
        return driver.supports(n)

    supported.__qualname__ = {"ddim": "'ddimN' has a stride for N (N >= 2)", "template": "2 <= N <= T"}.get(
        driver.kind, "N is the fixed sections' total")
    name = f"{type(obj).__qualname__}.{'p_sample_loop' if family == 'ddpm' else 'ddim_sample_loop'}"
    target = LoopSampler(
        sample, conv, name=name, accepts_eta=family == "ddim", accepts_generator=False, noise_source="global",
        timesteps=driver.timesteps, supported_num_steps=supported, coefficient_dtype=torch.float32,
        model_timestep=(lambda t: t * 1000.0 / T) if reading.rescale_timesteps else None)
    rule_text = {"ddim": "'ddimN' (smallest integer stride giving exactly N steps)",
                 "template": "space_timesteps(T, str(N)) (one section, fractional stride, round half to even)",
                 "fixed": f"the fixed sections {respacing or ''!r}" if driver.counts else "the object's own kept list only"}
    notes = [
        reading.schedule_note,
        f"timesteps: {rule_text.get(driver.kind, rule_text['fixed'])}; the object keeps N={len(reading.kept)}",
        "coefficients: float64 numpy tables, each per-step coefficient rounded to float32 (_extract_into_tensor(...).float())",
        f"x̂₀ clamped to [-1, 1]: clip_denoised={clip_denoised}"
        + ("; ε̂ re-derived from x̂₀ (ddim_sample)" if family == "ddim" else ""),
        "noise: th.randn_like (the global RNG), none at t = 0 (nonzero_mask)",
        "N=1 not supported: the library cannot build a one-step process (posterior_variance[1] raises IndexError)",
    ]
    if reading.rescale_timesteps:
        notes.append(f"rescale_timesteps=True: the model sees t·1000/{T} (declared as model_timestep)")
    if reading.variance_type == "learned":
        notes.append("LEARNED: the library reads the variance output as a log variance; the adapter passes log of the probe's variance")
    if family == "ddpm" and reading.variance_type == "fixed_large":
        notes.append("FIXED_LARGE: β of the respaced schedule (its entry 0, never used, is β̃_1)")
    if driver.spaced_cls is None or driver.space_timesteps is None:
        notes.append("SpacedDiffusion/space_timesteps not found beside the object's class: only its own N is checked")
    target.notes = tuple(notes)  # type: ignore[attr-defined]
    target.reading = reading  # type: ignore[attr-defined]
    target.driver = driver  # type: ignore[attr-defined]
    return target


def p_sample_target(obj: Any, *, respacing: str | None = None, clip_denoised: bool = True, betas: Any = None) -> LoopSampler:
    r"""The object's ``p_sample_loop`` (ancestral DDPM, Ho et al. 2020 Algorithm 2 over the respaced
    schedule, eq. 7) as a :class:`~.loop.LoopSampler`.

    ``respacing``: the rule that gives N's timesteps: ``"{}"`` (``space_timesteps(T, str(N))``),
    ``"ddim{}"``, a fixed section string ``"10,15,20"``, or None (the rule the object's own
    ``timestep_map`` follows). ``clip_denoised``: the argument passed to the loop (library default True).
    ``betas``: the base table, for a SpacedDiffusion whose schedule is not one of the named ones.
    """
    return _target(obj, "ddpm", respacing=respacing, clip_denoised=clip_denoised, betas=betas)


def ddim_target(obj: Any, *, respacing: str | None = None, clip_denoised: bool = True, betas: Any = None) -> LoopSampler:
    r"""The object's ``ddim_sample_loop`` (Song et al. 2021 eq. 12 with σ(η) of eq. 16) as a
    :class:`~.loop.LoopSampler`; arguments as :func:`p_sample_target`."""
    return _target(obj, "ddim", respacing=respacing, clip_denoised=clip_denoised, betas=betas)


# -- inversion --------------------------------------------------------------------------------------------


def _inversion_model(T: int, seed: int, rescaled: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A deterministic stand-in model: ε(x, t) = tanh(x)/2 + a fixed standard-normal field F_t (a function of (x, t)).

    ``rescaled``: the library passes t·1000/T; the index is recovered as round(value·T/1000).
    """
    fields: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
    scale = T / 1000.0 if rescaled else 1.0

    def model(x: torch.Tensor, t: torch.Tensor, **_: Any) -> torch.Tensor:
        index = int(round(float(t.reshape(-1)[0]) * scale))
        key = (index, tuple(x.shape))
        if key not in fields:
            g = torch.Generator().manual_seed(seed * 100_003 + index)
            fields[key] = torch.randn(x.shape, generator=g, dtype=torch.float64)
        return (0.5 * torch.tanh(x.to(torch.float64)) + fields[key]).to(x.dtype)

    return model


class ReverseSampleInversion:
    r"""Drives ``ddim_reverse_sample`` of an improved-/guided-diffusion object (an inversion recorder).

    Made by :func:`reverse_sample_target`; judged by the ``adapter`` check family
    (:func:`ddspec.conformance.checks.adapter_extras.check_reverse_sample`, or :meth:`recordings`).

    Attributes:
        reading: what the adapter read from the object.
        conventions: the DDIM conventions of the inversion (``clip_sample=False``: the steps are run with
            ``clip_denoised=False``; ε̂ re-derived from x̂₀ as ``ddim_sample`` does).
    """

    def __init__(self, obj: Any, *, respacing: str | None = None, betas: Any = None) -> None:
        self.obj = obj
        self.reading = read_diffusion(obj, betas=betas)
        if respacing is not None:
            _parse_respacing(respacing)
        self.respacing = self.reading.respacing if respacing is None else respacing
        self.conventions = _conventions(self.reading, "ddim", False)
        self.name = f"{type(obj).__qualname__}.ddim_reverse_sample"

    def record_inversion(self, num_steps: int | None = None, *, dtype: str | torch.dtype = "float32", seed: int = 0,
                         batch: int = 8) -> StepRecord:
        r"""Run ``ddim_reverse_sample`` over the N-step process and record every step.

        Step k goes from the kept index τ_k (``t``, the source: the model is called there) to τ_{k+1}
        (``t_prev``, the destination), ``clip_denoised=False``; x starts uniform in [−0.8, 0.8] (float64
        draws cast down) and each step starts from the library's previous output. The model is
        :math:`\epsilon(x, t) = \tanh(x)/2 + F_t` (a fixed standard-normal field per index, a function of
        (x, t)); the recorded model output is that value at the source index. The last kept index has no
        successor (``alphas_cumprod_next`` ends in 0: the step maps to ε̂ itself) and is not recorded.
        Coefficients are the library's float64 tables rounded to float32 per step (``coefficient_dtype``).
        Nothing is driven where the conventions are unsupported or N is not (``skipped``).

        Raises:
            ValueError: ``num_steps`` outside [1, T], ``batch`` < 1 or ``dtype`` unknown (naming it).
        """
        reading, conv = self.reading, self.conventions
        n = len(reading.kept) if num_steps is None else as_int(num_steps, "num_steps", low=1, high=reading.T)
        b = as_int(batch, "batch", low=1)
        run_dtype = getattr(torch, dtype_name(dtype))
        base = reading.base_betas

        def record(ts: list[int], transitions: tuple[Transition, ...], skipped: str | None = None) -> StepRecord:
            return StepRecord(kind="inversion", family="loop", num_steps=n, eta=0.0, conventions=conv,
                              timesteps=np.asarray(ts, dtype=np.int64), transitions=transitions,
                              alphas_cumprod=np.cumprod(1.0 - base), dtype=dtype_name(dtype), coefficient_dtype="float32",
                              what=f"ddim_reverse_sample vs reference ddim_invert_step (model at the source index), "
                                   f"N={n}, {dtype_name(dtype)}",
                              reproduce="for k, t in enumerate(kept[:-1]): x = diffusion.ddim_reverse_sample(model, x, "
                                        "th.full((B,), k), clip_denoised=False)['sample']",
                              skipped=skipped)

        if conv.unsupported:
            return record([], ())
        driver = _Driver(self.obj, reading, self.respacing, False)
        if not driver.supports(n):
            return record([], (), f"N={n} is not supported by the respacing rule")
        diffusion = driver.diffusion(n)
        kept = sorted(driver.timesteps(n))
        probe = _inversion_model(reading.T, seed, reading.rescale_timesteps)
        plain = _inversion_model(reading.T, seed, False)  # the same field, called here with the index itself
        model = driver.model(probe, 3, True) if reading.variance_type in LEARNED_VARIANCE_TYPES else probe
        g = torch.Generator().manual_seed(seed)
        x = (torch.rand((b, 3, 4, 4), generator=g, dtype=torch.float64) * 1.6 - 0.8).to(run_dtype)
        transitions = []
        with torch.no_grad():
            for k in range(len(kept) - 1):
                t_from, t_to = kept[k], kept[k + 1]
                index = torch.full((b,), k, dtype=torch.long)
                out = plain(x, torch.full((b,), t_from, dtype=torch.long)).to(torch.float64).numpy()
                got = diffusion.ddim_reverse_sample(model, x, index, clip_denoised=False)["sample"]
                transitions.append(Transition(t=t_from, t_prev=t_to, x_t=x.to(torch.float64).numpy().copy(),
                                              model_output=out.copy(), x_prev=got.to(torch.float64).numpy().copy(), step=k))
                x = got.to(run_dtype)
        return record(kept, tuple(transitions))

    def recordings(self, *, dtype: str | torch.dtype = "float32", steps: Sequence[int] | None = None, seed: int = 0
                   ) -> list[StepRecord]:
        """:meth:`record_inversion` at every supported N of ``steps`` (the object's own N when none is)."""
        driver = _Driver(self.obj, self.reading, self.respacing, False)
        chosen = [int(n) for n in (steps or ()) if driver.supports(int(n))] or [len(self.reading.kept)]
        return [self.record_inversion(n, dtype=dtype, seed=seed) for n in chosen]


def reverse_sample_target(obj: Any, *, respacing: str | None = None, betas: Any = None) -> ReverseSampleInversion:
    r"""The object's ``ddim_reverse_sample`` (DDIM inversion, Song et al. 2021 eq. 12 with σ = 0 run towards
    noisier indices, model at the source) as an inversion recorder; check it with
    ``ddspec.conformance.checks.adapter_extras.check_reverse_sample(reverse_sample_target(diffusion))``.
    Arguments as :func:`p_sample_target`."""
    return ReverseSampleInversion(obj, respacing=respacing, betas=betas)
