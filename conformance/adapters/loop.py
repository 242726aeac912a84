r"""Whole sampling loops as targets: :class:`LoopSampler` declares how to call a loop and what it computes.

A *loop target* is a callable

.. code-block:: python

    sample(model, x_T, num_steps, *, eta=0.0, generator=None) -> x_0

that runs a whole DDPM/DDIM sampling loop. The harness supplies ``model`` (a probe backed by exact
oracles, :mod:`ddspec.conformance.trajectory`) and judges the loop from what the probe records: the
timesteps it was called with and every transition between two calls (``docs/loops.md``).

The model contract (what the loop may assume about ``model``):

* ``model(x_t, t)`` takes the current state (batch first) and ``t``, a tensor of shape ``[batch]``
  holding one timestep index for the whole batch (int64 as UNets get it; a float tensor of integral
  values, as ermongroup/ddim's ``torch.ones(n) * i``, is accepted too). A loop that passes a rescaled
  value (improved-diffusion's ``rescale_timesteps``, :math:`t \cdot 1000/T`) declares the map with
  ``model_timestep``; an undeclared rescale fails ``loop.timesteps``.
* It returns ε̂, x̂₀ or v̂ (``conventions.prediction_type``) of x_t's shape and dtype. For the learned
  variance types (``variance_type`` ``"learned"`` / ``"learned_range"``) it returns the variance
  output *concatenated on dim 1* after the prediction (improved-diffusion's convention), so the output
  has twice x_t's channels: ``eps, var = out.split(C, dim=1)``. ``"learned"`` is a variance (the
  meaning of :class:`~ddspec.conformance.protocol.Conventions`), ``"learned_range"`` the fraction
  :math:`v \in (-1, 1)`.
* Extra keyword arguments (``model(x, t, **model_kwargs)``) are accepted and ignored.

Index convention (``docs/conventions.md``): ``t`` is the 0-based index; the step after the last call
goes to index −1 (ᾱ = 1), or to index 0 when ``conventions.final_alpha_bar_is_one`` is False.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference.timesteps import get_timesteps
from ddspec.reference.vocabulary import NAMED_SPACINGS

from ..protocol import (
    NOISE_SOURCES,
    Conventions,
    NumStepsSupport,
    as_coefficient_dtype,
    num_steps_support,
    supported_num_steps as declared_support,
)

__all__ = ["LoopSampler", "NOISE_SOURCES", "TimestepDeclaration"]

TimestepDeclaration = Mapping[int, Sequence[int]] | Callable[[int], Sequence[int]]


def _bad(name: str, value: Any, why: str) -> ValueError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValueError(f"{name}={shown}: {why}")


def _float_dtype(value: Any, name: str) -> torch.dtype | None:
    if value is None:
        return None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise _bad(name, value, "must be a torch floating dtype (e.g. torch.float32) or None")
    return value


def _int_sequence(values: Any, where: str) -> NDArray[np.int64]:
    """``values`` (list, range, array, tensor) as a 1-D int64 array; ValueError naming ``where``."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    except TypeError as exc:
        raise _bad(where, values, "must be a sequence of integer timestep indices") from exc
    if arr.ndim != 1 or arr.size == 0:
        raise _bad(where, values, "must be a non-empty 1-D sequence of timestep indices")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise _bad(where, values, "must hold integer timestep indices")
    return arr.astype(np.int64)


class LoopSampler:
    r"""A whole sampling loop, declared for the harness (see the module docstring for the contract).

    Args:
        sample: the loop, ``sample(model, x_T, num_steps, *, eta=0.0, generator=None) -> x_0``.
        conventions: what the loop computes (:class:`~ddspec.conformance.protocol.Conventions`: family,
            schedule, prediction type, variance, spacing, clipping, final ᾱ). ``supports_noise_injection``
            is not used: a loop takes no noise tensor, its noise is judged statistically.
        name: the label in reports (default: ``sample``'s qualified name).
        accepts_eta: whether ``sample`` takes ``eta=``. If False the harness never passes it, and a DDIM
            loop is checked at η = 0 only.
        accepts_generator: whether ``sample`` takes ``generator=`` (a ``torch.Generator``).
        noise_source: ``"generator"`` (draws only from the generator it is given) or ``"global"``
            (draws from torch's global RNG, e.g. ``torch.randn_like``); default ``"generator"`` when
            ``accepts_generator`` else ``"global"``. The harness seeds the global RNG inside
            ``torch.random.fork_rng`` either way, so the caller's global state is left unchanged.
        timesteps: an explicit timestep list per N, noisiest first: a mapping ``N -> list`` or a
            callable ``N -> list``. The step maths is then checked for the declared pairs, and
            ``loop.timesteps`` names the nearest rule ddspec knows and how the list differs from it
            (``acceptable``, never a failure). None: the rule of ``conventions.timestep_spacing``.
        supported_num_steps: the N the loop supports, a set of ints or a predicate ``N -> bool``
            (e.g. ``{1000}`` for a loop that only runs every training step). The checks use only
            supported N and report the others as skipped. None: every N (for a ``timesteps`` mapping,
            its keys). Kept as the attribute ``supported_num_steps``, a
            :class:`~ddspec.conformance.protocol.NumStepsSupport` (the protocol's declaration, shared with
            step targets: :func:`~ddspec.conformance.protocol.supported_num_steps`).
        coefficient_dtype: the dtype each step's coefficients are rounded to when they are taken from
            wider tables (improved-diffusion's ``_extract_into_tensor(...).float()`` over float64
            tables: ``torch.float32``; a torch dtype or its name). The error model then charges that
            rounding (:func:`~ddspec.conformance.protocol.coefficient_dtype`).
        table_dtype: the dtype the loop computes its β/ᾱ tables in when that is narrower than the run's
            (ermongroup/ddim and most tutorials: a float32 ``cumprod``). The error model then charges a
            running product in that dtype.
        model_timestep: the value the loop passes to the model for index t, when it is not t itself:
            a callable ``t -> float`` (improved-diffusion's ``rescale_timesteps``:
            ``lambda t: t * 1000.0 / T``). The probe maps the received value back to the index.
        betas, alphas_cumprod: the loop's own tables (length T), if it exposes them; the runner then
            also runs the schedule family on them.

    Raises:
        ValueError: a declaration that is malformed (naming the argument and the value).
    """

    target_kind = "loop"

    def __init__(
        self,
        sample: Callable[..., Any],
        conventions: Conventions,
        *,
        name: str | None = None,
        accepts_eta: bool = True,
        accepts_generator: bool = True,
        noise_source: str | None = None,
        timesteps: TimestepDeclaration | None = None,
        supported_num_steps: Collection[int] | Callable[[int], bool] | NumStepsSupport | None = None,
        coefficient_dtype: torch.dtype | str | None = None,
        table_dtype: torch.dtype | None = None,
        model_timestep: Callable[[int], float] | None = None,
        betas: Any = None,
        alphas_cumprod: Any = None,
    ) -> None:
        if not callable(sample):
            raise _bad("sample", sample, "must be a callable sample(model, x_T, num_steps, ...)")
        if not isinstance(conventions, Conventions):
            raise _bad("conventions", conventions, "must be a ddspec.conformance.protocol.Conventions")
        for flag, value in (("accepts_eta", accepts_eta), ("accepts_generator", accepts_generator)):
            if not isinstance(value, bool):
                raise _bad(flag, value, "must be a bool")
        if noise_source is None:
            noise_source = "generator" if accepts_generator else "global"
        if noise_source not in NOISE_SOURCES:
            raise _bad("noise_source", noise_source, f"must be one of {NOISE_SOURCES}")
        if noise_source == "generator" and not accepts_generator:
            raise _bad("noise_source", noise_source, "a loop that does not accept a generator draws from the global RNG")
        if timesteps is not None and not (isinstance(timesteps, Mapping) or callable(timesteps)):
            raise _bad("timesteps", timesteps, "must be a mapping N -> list, a callable N -> list, or None")
        if isinstance(timesteps, Mapping):
            for n, seq in timesteps.items():
                if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                    raise _bad("timesteps", n, "keys must be step counts N >= 1")
                _int_sequence(seq, f"timesteps[{n}]")
        support = num_steps_support(supported_num_steps)
        if supported_num_steps is None and isinstance(timesteps, Mapping):
            keys = frozenset(int(n) for n in timesteps)
            support = NumStepsSupport(steps=keys, description=f"the timesteps mapping's keys {sorted(keys)}")
        if model_timestep is not None and not callable(model_timestep):
            raise _bad("model_timestep", model_timestep, "must be a callable t -> value passed to the model, or None")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise _bad("name", name, "must be a non-empty str or None")
        self.sample = sample
        self.conventions = conventions
        self.name = name or getattr(sample, "__qualname__", None) or type(sample).__name__
        self.accepts_eta = accepts_eta
        self.accepts_generator = accepts_generator
        self.noise_source = noise_source
        self.timestep_declaration = timesteps
        self.supported_num_steps: NumStepsSupport = support
        self.coefficient_dtype: torch.dtype | None = as_coefficient_dtype(coefficient_dtype)
        self.table_dtype = _float_dtype(table_dtype, "table_dtype")
        self.model_timestep = model_timestep
        T = conventions.num_train_timesteps
        self._betas = self._table(betas, "betas", T)
        self._alphas_cumprod = self._table(alphas_cumprod, "alphas_cumprod", T)

    @staticmethod
    def _table(value: Any, name: str, T: int) -> NDArray[np.float64] | None:
        if value is None:
            return None
        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu", torch.float64).numpy()
        arr = np.array(value, dtype=np.float64, copy=True)
        if arr.shape != (T,):
            raise _bad(name, value, f"must have shape ({T},) = (num_train_timesteps,), got {arr.shape}")
        return arr

    def __repr__(self) -> str:
        return f"LoopSampler({self.name!r}, family={self.conventions.family!r}, T={self.conventions.num_train_timesteps})"

    # -- declarations the checks read ---------------------------------------------------------------

    @property
    def has_tables(self) -> bool:
        """Whether the loop exposes its β and ᾱ tables (then the schedule family runs on them)."""
        return self._betas is not None and self._alphas_cumprod is not None

    def betas(self) -> NDArray[np.float64]:
        """A float64 copy of the loop's β table; ``AttributeError`` when it exposes none."""
        if self._betas is None:
            raise AttributeError(f"{self.name}: the loop exposes no betas table (LoopSampler(..., betas=...))")
        return self._betas.copy()

    def alphas_cumprod(self) -> NDArray[np.float64]:
        """A float64 copy of the loop's ᾱ table; ``AttributeError`` when it exposes none."""
        if self._alphas_cumprod is None:
            raise AttributeError(f"{self.name}: the loop exposes no alphas_cumprod table")
        return self._alphas_cumprod.copy()

    @property
    def explicit_timesteps(self) -> bool:
        """Whether the timesteps are declared explicitly (``timesteps=``) rather than by a named rule."""
        return self.timestep_declaration is not None

    def supports(self, num_steps: int) -> bool:
        """Whether the loop supports N = ``num_steps``: 1 ≤ N ≤ T and N in ``supported_num_steps`` (or the mapping's keys)."""
        n = int(num_steps)
        return 1 <= n <= self.conventions.num_train_timesteps and declared_support(self).supports(n)

    def supported_description(self) -> str:
        """The declaration as text, for messages (:attr:`NumStepsSupport.description`)."""
        return declared_support(self).description

    def expected_timesteps(self, num_steps: int) -> NDArray[np.int64]:
        r"""The declared N-step timestep sequence (noisiest first): the explicit list, or the rule of
        ``conventions.timestep_spacing`` (``ddspec.reference.timesteps``).

        Raises:
            ValueError: no rule for N (a ``"custom"`` spacing without ``timesteps=``, N missing from
                the mapping, the declared callable raised, or the rule is undefined for N).
        """
        n = int(num_steps)
        declared = self.timestep_declaration
        if isinstance(declared, Mapping):
            if n not in declared:
                raise _bad("num_steps", n, f"is not a key of the declared timesteps mapping {sorted(declared)}")
            return _int_sequence(declared[n], f"timesteps[{n}]")
        if declared is not None:
            return _int_sequence(declared(n), f"timesteps({n})")
        conv = self.conventions
        if conv.timestep_spacing not in NAMED_SPACINGS:
            raise _bad("timestep_spacing", conv.timestep_spacing,
                       "has no reference rule; declare the loop's list with LoopSampler(..., timesteps=...)")
        offset = conv.steps_offset if conv.timestep_spacing == "leading" else 0
        return np.asarray(get_timesteps(conv.timestep_spacing, conv.num_train_timesteps, n, offset), dtype=np.int64)

    def model_timestep_table(self) -> NDArray[np.float64] | None:
        """``model_timestep(t)`` for t = 0..T−1 (float64), or None when the model gets the index itself.

        Raises:
            ValueError: the mapping raised or returned a non-finite value, naming ``model_timestep``.
        """
        if self.model_timestep is None:
            return None
        T = self.conventions.num_train_timesteps
        out = np.empty(T, dtype=np.float64)
        for t in range(T):
            try:
                value = self.model_timestep(t)
                out[t] = float(value.item() if hasattr(value, "item") else value)
            except Exception as exc:  # noqa: BLE001 - a user declaration
                raise _bad("model_timestep", self.model_timestep, f"raised at t={t}: {type(exc).__name__}: {exc}") from exc
        if not np.all(np.isfinite(out)):
            raise _bad("model_timestep", self.model_timestep, "returned a non-finite value")
        return out
