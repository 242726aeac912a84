r"""Adapter for diffusers' ``DDPMScheduler`` (and subclasses): the ancestral DDPM step.

Facts about the target (diffusers 0.42, ``schedulers/scheduling_ddpm.py``; see ``/work/shared/anchors.md``):

* Tables are float32 tensors: ``betas``, ``alphas_cumprod = cumprod(1 − betas)``; ᾱ before the first
  step is 1 (``self.one``), so the DDPM adapter declares ``final_alpha_bar_is_one=True``.
* After ``set_timesteps(N)`` the previous timestep of ``t`` is the next element of ``timesteps`` (−1
  after the last), and the step uses the respaced β′ = 1 − ᾱ_t/ᾱ_prev in the posterior mean and variance.
* Noise is added when ``t > 0`` (not when the previous timestep is ≥ 0), drawn by the module-level
  function ``randn_tensor(model_output.shape, generator=..., device=..., dtype=model_output.dtype)``.
  ``step`` has no argument for the noise tensor.
* For ``variance_type`` "learned"/"learned_range" the model output carries the variance channels
  concatenated after the prediction along dim 1; ``step`` splits it when
  ``model_output.shape[1] == 2 * sample.shape[1]``.

Noise injection. To make the target use exactly the caller's ``z``, :meth:`DiffusersDDPMAdapter.step`
temporarily replaces the name ``randn_tensor`` in the globals of every module that defines a ``step``
along the scheduler class's MRO (``diffusers.schedulers.scheduling_ddpm`` for DDPMScheduler, plus a
subclass's own module if it overrides ``step``) by a stub that returns ``z``, and restores the
originals in a ``finally`` block. The stub checks the requested shape and casts ``z`` to the requested
dtype/device (a no-op when ``z`` already has ``model_output``'s). The adapter raises ``RuntimeError``
if the target drew noise more than once, or not at all at a timestep t > 0 (where DDPMScheduler always
draws), since the injected ``z`` would then not be the noise the target used. This patch is process-global while the
step runs: do not step two DDPM adapters from different threads at the same time.

Old releases (0.10 on). Config fields a release does not have are read with that release's behaviour
(:mod:`._diffusers_compat`: e.g. no ``timestep_spacing`` before 0.18 means leading), and the adapter's
``notes`` say so, one line per field. diffusers 0.10/0.11 draw the noise with ``torch.randn`` inside
``step`` (no ``randn_tensor``): there the module's name ``torch`` is replaced, during the call only, by
a proxy whose ``randn`` is the stub, and a note says so.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference._validate import as_int, as_scalar, fail
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES, NAMED_SPACINGS

from ..protocol import (
    DDPM_VARIANCE_TYPES,
    PREDICTION_TYPES,
    Conventions,
)
from ._diffusers_compat import ReleaseConfig, honoured_fields, read_release_config, release_of

__all__ = ["DiffusersDDPMAdapter", "BETA_SCHEDULE_NAMES"]

BETA_SCHEDULE_NAMES: dict[str, str] = {
    "linear": "linear",
    "scaled_linear": "scaled_linear",
    "squaredcos_cap_v2": "cosine",
    "sigmoid": "sigmoid",
}
"""diffusers ``beta_schedule`` name -> ddspec name. Others (e.g. DDPM's undocumented "laplace") are unsupported."""

_SPACINGS = NAMED_SPACINGS


def _entry(field: str, value: object, why: str) -> str:
    return f"{field}={value!r}: {why}"


def read_common_config(
    scheduler: Any, known_fields: Iterable[str], *, schedule_names: dict[str, str], family: str, base: type,
) -> tuple[dict[str, Any], list[str], ReleaseConfig]:
    r"""Read the config fields that DDPMScheduler and DDIMScheduler share into :class:`Conventions` keywords.

    Every field is read as the release at hand behaves (:func:`._diffusers_compat.read_release_config`):
    a field the release does not have (``timestep_spacing`` before 0.17/0.18, ``thresholding`` before
    0.15, ...) gets that release's fixed behaviour, and the returned :class:`ReleaseConfig` has a note
    saying so. Returns ``(fields, unsupported, release_config)``. Unknown values keep the target's raw
    value and get an entry in ``unsupported``; so do parameters of the scheduler class's ``__init__``
    that are not in ``known_fields`` (a subclass's own options: the adapter cannot say what they do).
    Config keys that are not ``__init__`` parameters are ignored, as diffusers ignores them.

    Raises:
        UnsupportedRelease: the release lacks a field the adapter needs (the message names both).
    """
    known = tuple(known_fields)
    rc = read_release_config(
        scheduler.config, honoured_fields(type(scheduler), base), known,
        release=release_of(scheduler), family=family, class_name=type(scheduler).__name__,
    )
    unsupported: list[str] = []
    fields: dict[str, Any] = {"num_train_timesteps": int(rc["num_train_timesteps"])}

    trained = rc["trained_betas"]
    raw_schedule = rc["beta_schedule"]
    if trained is not None:
        fields["beta_schedule"] = "custom"
        fields["trained_betas"] = tuple(float(b) for b in np.asarray(trained, dtype=np.float64).ravel())
    elif raw_schedule in schedule_names:
        fields["beta_schedule"] = schedule_names[raw_schedule]
    else:
        fields["beta_schedule"] = raw_schedule
        unsupported.append(_entry("beta_schedule", raw_schedule, "no ddspec schedule of this name"))
    fields["beta_start"] = float(rc["beta_start"])
    fields["beta_end"] = float(rc["beta_end"])
    fields["rescale_betas_zero_snr"] = bool(rc["rescale_betas_zero_snr"])

    fields["prediction_type"] = rc["prediction_type"]
    if rc["prediction_type"] not in PREDICTION_TYPES:
        unsupported.append(_entry("prediction_type", rc["prediction_type"], f"not one of {PREDICTION_TYPES}"))
    fields["timestep_spacing"] = rc["timestep_spacing"]
    if rc["timestep_spacing"] not in _SPACINGS:
        unsupported.append(_entry("timestep_spacing", rc["timestep_spacing"], f"not one of {_SPACINGS}"))
    fields["steps_offset"] = int(rc["steps_offset"])

    fields["clip_sample"] = bool(rc["clip_sample"])
    fields["clip_sample_range"] = float(rc["clip_sample_range"])
    fields["thresholding"] = bool(rc["thresholding"])
    fields["dynamic_thresholding_ratio"] = float(rc["dynamic_thresholding_ratio"])
    fields["sample_max_value"] = float(rc["sample_max_value"])

    cfg = scheduler.config
    params = inspect.signature(type(scheduler).__init__).parameters
    for pname, param in params.items():
        if pname == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or pname in known:
            continue
        if pname in cfg:
            unsupported.append(_entry(pname, cfg[pname], "config field not interpreted by the adapter"))
        else:
            unsupported.append(f"{pname}=<not recorded in config>: __init__ parameter not interpreted by the adapter")
    return fields, unsupported, rc


def table(tensor: torch.Tensor) -> NDArray[np.float64]:
    """A float64 numpy copy of a scheduler table tensor, values as stored (float32 cast up exactly)."""
    return tensor.detach().to("cpu", torch.float64).numpy().copy()


def check_step_inputs(model_output: Any, x_t: Any, noise: Any) -> None:
    """Shared validation of ``step`` arguments (tensors, same shape)."""
    for arg, value in (("model_output", model_output), ("x_t", x_t)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            fail(arg, value, "expected a floating-point torch.Tensor")
    if model_output.shape != x_t.shape:
        fail("model_output", tuple(model_output.shape), f"shape must equal x_t's shape {tuple(x_t.shape)}")
    if noise is not None and (not isinstance(noise, torch.Tensor) or noise.shape != x_t.shape):
        fail("noise", getattr(noise, "shape", noise), f"must be a tensor of x_t's shape {tuple(x_t.shape)}")


def as_step_timestep(t: Any, timesteps: NDArray[np.int64], num_steps: int) -> int:
    """``t`` as a Python int that is one of the N-step schedule's timesteps (``ValueError`` naming t otherwise)."""
    if isinstance(t, torch.Tensor) and t.numel() == 1 and not t.is_floating_point():
        t = int(t.item())
    tt = as_int(t, "t")
    if not np.any(timesteps == tt):
        fail("t", t, f"is not a timestep of the target's {num_steps}-step schedule {timesteps.tolist()[:6]}...")
    return tt


_DDPM_FIELDS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "variance_type",
    "clip_sample",
    "prediction_type",
    "thresholding",
    "dynamic_thresholding_ratio",
    "clip_sample_range",
    "sample_max_value",
    "timestep_spacing",
    "steps_offset",
    "rescale_betas_zero_snr",
)


class DiffusersDDPMAdapter:
    r"""Wrap a diffusers ``DDPMScheduler`` (or subclass instance) as a :class:`~ddspec.conformance.protocol.Sampler`.

    ``conventions`` are read from ``scheduler.config`` once, at construction: every field the class
    honours (``_DDPM_FIELDS``); ``squaredcos_cap_v2`` is declared as ddspec's ``"cosine"``, an explicit
    ``trained_betas`` as ``"custom"``. Values the adapter cannot interpret are kept raw and listed in
    ``conventions.unsupported``. The scheduler's own state (its timesteps) is changed by
    ``set_timesteps``; the adapter calls it whenever N changes. See the module docstring for how
    noise is injected.
    """

    #: The diffusers class this adapter reads (a subclass adapter for a sibling class names its own).
    DIFFUSERS_CLASS = "DDPMScheduler"
    #: Notes the adapter adds to the release's notes (a sibling class says how it is read).
    EXTRA_NOTES: tuple[str, ...] = ()

    def __init__(self, scheduler: Any, *, name: str | None = None) -> None:
        import diffusers  # lazy: ddspec.conformance imports without diffusers

        base = getattr(diffusers, self.DIFFUSERS_CLASS)
        if not isinstance(scheduler, base):
            fail("scheduler", scheduler, f"expected a diffusers {self.DIFFUSERS_CLASS} (or subclass) instance")
        self.scheduler = scheduler
        self.name = name if name is not None else f"diffusers.{type(scheduler).__name__}"
        fields, unsupported, rc = read_common_config(scheduler, _DDPM_FIELDS, schedule_names=BETA_SCHEDULE_NAMES,
                                                     family="ddpm", base=base)
        vt = rc["variance_type"]
        if vt not in DDPM_VARIANCE_TYPES:
            unsupported.append(_entry("variance_type", vt, f"not one of {DDPM_VARIANCE_TYPES}"))
        self._patch_targets = _noise_sites(type(scheduler))
        #: the diffusers release the scheduler comes from, and one note per config field that release
        #: does not have (filled with its behaviour), e.g. "diffusers 0.14.0 has no timestep_spacing: ...".
        self.release: str = rc.release
        self.notes: tuple[str, ...] = rc.notes + self.EXTRA_NOTES + tuple(
            f"diffusers {rc.release}: {type(scheduler).__name__}.step draws its noise with torch.randn; the "
            "injected noise replaces that call" for _ns, kind in self._patch_targets if kind == "torch")
        self.conventions = Conventions(
            family="ddpm",
            variance_type=vt,
            final_alpha_bar_is_one=True,
            use_clipped_model_output=False,
            supports_noise_injection=bool(self._patch_targets),
            unsupported=tuple(unsupported),
            **fields,
        )

    # ------------------------------------------------------------------ tables and timesteps
    def betas(self) -> NDArray[np.float64]:
        r"""The scheduler's ``betas`` tensor as float64 (float32 values cast up, not recomputed)."""
        return table(self.scheduler.betas)

    def alphas_cumprod(self) -> NDArray[np.float64]:
        r"""The scheduler's ``alphas_cumprod`` tensor (its float32 cumprod) as float64."""
        return table(self.scheduler.alphas_cumprod)

    def _ensure_timesteps(self, num_steps: int) -> NDArray[np.int64]:
        n = as_int(num_steps, "num_steps", low=1, high=self.conventions.num_train_timesteps)
        s = self.scheduler
        if s.num_inference_steps != n or getattr(s, "custom_timesteps", False):
            try:
                s.set_timesteps(n)
            except BaseException:
                # see DiffusersDDIMAdapter._ensure_timesteps: forget the half-set N so that it raises again
                s.num_inference_steps = None
                raise
        return s.timesteps.detach().to("cpu").numpy().astype(np.int64)

    def timesteps(self, num_steps: int) -> NDArray[np.int64]:
        r"""``scheduler.timesteps`` after ``set_timesteps(num_steps)``, as int64 (the target's own rule)."""
        return self._ensure_timesteps(num_steps).copy()

    # ------------------------------------------------------------------ step
    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        x_t: torch.Tensor,
        *,
        num_steps: int,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        predicted_variance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""``scheduler.step(model_output, t, x_t).prev_sample`` with the noise ``z = noise`` if given.

        ``eta`` is ignored (DDPM). For learned variance types ``predicted_variance`` (x_t's shape) is
        concatenated after ``model_output`` along dim 1, as diffusers expects; otherwise it must be
        ``None``. When ``noise`` is given, ``generator`` is not used.
        """
        check_step_inputs(model_output, x_t, noise)
        as_scalar(eta, "eta", low=0.0)
        ts = self._ensure_timesteps(num_steps)
        tt = as_step_timestep(t, ts, num_steps)
        vt = self.conventions.variance_type
        if vt in LEARNED_VARIANCE_TYPES:
            if not isinstance(predicted_variance, torch.Tensor) or predicted_variance.shape != x_t.shape:
                fail("predicted_variance", getattr(predicted_variance, "shape", predicted_variance),
                     f"variance_type={vt!r} needs a tensor of x_t's shape {tuple(x_t.shape)}")
            if x_t.dim() < 2:
                fail("x_t", tuple(x_t.shape), "learned variances are concatenated along dim 1, so x_t needs ndim >= 2")
            model_in = torch.cat([model_output, predicted_variance.to(model_output.dtype)], dim=1)
        else:
            if predicted_variance is not None:
                fail("predicted_variance", tuple(predicted_variance.shape), f"must be None for variance_type={vt!r}")
            model_in = model_output

        if noise is None:
            return self.scheduler.step(model_in, tt, x_t, generator=generator).prev_sample
        if not self._patch_targets:
            fail("noise", tuple(noise.shape),
                 f"cannot be injected: no step of {type(self.scheduler).__name__} reads a module-level randn_tensor")
        calls: list[tuple[int, ...]] = []
        stub = _noise_stub(noise, calls)
        originals = [(ns, kind, ns[kind]) for ns, kind in self._patch_targets]
        for ns, kind in self._patch_targets:
            ns[kind] = stub if kind == "randn_tensor" else _TorchWithRandn(ns[kind], stub)
        try:
            out = self.scheduler.step(model_in, tt, x_t).prev_sample
        finally:
            for ns, kind, original in originals:
                ns[kind] = original
        if len(calls) > 1:
            raise RuntimeError(f"noise injection: the target drew noise {len(calls)} times in one step")
        if tt > 0 and not calls:
            raise RuntimeError(
                f"noise injection: {type(self.scheduler).__name__}.step did not draw its noise through randn_tensor "
                f"at t={tt} (DDPMScheduler does for every t > 0), so the injected noise was not used"
            )
        return out


def _noise_sites(cls: type) -> list[tuple[dict[str, Any], str]]:
    r"""Where every ``step`` along ``cls``'s MRO draws its noise: ``(module globals, name)`` pairs.

    ``name`` is ``"randn_tensor"`` (diffusers 0.12 on: the module-level helper) or ``"torch"``
    (diffusers 0.10/0.11, whose ``step`` calls ``torch.randn`` directly: the module's name ``torch``
    is then replaced, during the call only, by a proxy whose ``randn`` is the stub).
    """
    sites: list[tuple[dict[str, Any], str]] = []
    for klass in cls.__mro__:
        fn = klass.__dict__.get("step")
        ns = getattr(fn, "__globals__", None)
        if ns is None or any(ns is seen for seen, _ in sites):
            continue
        if "randn_tensor" in ns:
            sites.append((ns, "randn_tensor"))
        elif ns.get("torch") is torch and "randn" in fn.__code__.co_names:
            sites.append((ns, "torch"))
    return sites


class _TorchWithRandn:
    """The ``torch`` module with ``randn`` replaced by the noise stub (old releases' ``step`` calls ``torch.randn``)."""

    def __init__(self, module: Any, randn: Callable[..., torch.Tensor]) -> None:
        self._module = module
        self.randn = randn

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._module, attr)


def _noise_stub(noise: torch.Tensor, calls: list[tuple[int, ...]]) -> Callable[..., torch.Tensor]:
    """A stand-in for diffusers' ``randn_tensor`` (or ``torch.randn``) that returns the injected ``noise`` (and records the call)."""

    def randn_tensor(shape: Any, *more: Any, generator: Any = None, device: Any = None, dtype: Any = None,
                     **_: Any) -> torch.Tensor:
        shape_t = tuple(int(n) for n in (shape if not isinstance(shape, int) else (shape, *more)))
        calls.append(shape_t)
        if shape_t != tuple(noise.shape):
            fail("noise", tuple(noise.shape), f"the target asked for noise of shape {shape_t}")
        return noise.to(device=device if device is not None else noise.device,
                        dtype=dtype if dtype is not None else noise.dtype)

    return randn_tensor
