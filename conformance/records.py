r"""Drive records of what a library adds beyond the step protocol, for the ``adapter`` check family to judge.

Some library objects do more than a reverse step: diffusers' parallel schedulers have
``batch_step_no_noise`` (one noise-free step for a batch whose elements sit at different timesteps),
an inverse scheduler or improved-diffusion's ``ddim_reverse_sample`` runs DDIM backwards, and a
pipeline post-processes its final state to [0, 1] and uint8. Their adapters
(:mod:`ddspec.conformance.adapters`) only *drive* the library and return the records defined here,
through a duck-typed ``recordings(dtype=, steps=, seed=)`` method; the check module
:mod:`ddspec.conformance.checks.adapter_extras` *judges* them against the reference, over the drive →
expect → judge core (``/work/shared/architecture.md``). Neither side imports the other: both import
this module.

* :class:`StepRecord` (``kind`` ``"batch_step_no_noise"`` or ``"inversion"``): the recorded
  :class:`~ddspec.conformance.trajectory.Transition`\ s with what the check must know to expect and
  judge them: N, η, the conventions, the target's ᾱ table (its storage dtype sets the error model),
  the dtypes of the run and of the per-step coefficients, the listed timesteps and the stride the
  library really uses for a step's other end, and a reproduce snippet.
* :class:`PostprocessRecord` (``kind`` ``"postprocess"``): the final state of one run and the
  library's [0, 1] and uint8 images of it.

Index convention (``docs/conventions.md``): t is the 0-based timestep index, −1 the data (ᾱ = 1).
For a *reverse* step (``batch_step_no_noise``) a transition's ``t`` is the noisier index and
``t_prev`` the index it steps to; for an *inversion* step, which runs towards noisier indices,
``t`` is the **source** index (−1: the data) and ``t_prev`` the **destination**.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .protocol import Conventions
from .trajectory import Transition

__all__ = ["STEP_RECORD_KINDS", "StepRecord", "PostprocessRecord", "dtype_name"]

Array = NDArray[np.float64]

#: The kinds of :class:`StepRecord`.
STEP_RECORD_KINDS: tuple[str, ...] = ("batch_step_no_noise", "inversion")
#: The result families a step record may be reported under.
_FAMILIES: tuple[str, ...] = ("single_step", "loop")
_DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")


def dtype_name(dtype: object) -> str:
    """``"float32"`` for ``torch.float32``, ``np.float32`` or ``"float32"``; ValueError naming ``dtype`` otherwise."""
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {list(_DTYPES)}")
    return name


@dataclass(frozen=True)
class StepRecord:
    r"""The recorded steps of one library run, and what the check needs to judge them.

    Attributes:
        kind: ``"batch_step_no_noise"`` (reverse steps, judged against the reference step's mean) or
            ``"inversion"`` (DDIM η = 0 steps towards noisier indices, judged against
            :func:`ddspec.reference.inversion.ddim_invert_step`).
        family: the result family: ``"single_step"`` (a scheduler method) or ``"loop"`` (a library loop).
        num_steps: N of the run.
        eta: the η passed (0 for an inversion).
        conventions: the target's declared conventions (its ``unsupported`` entries make the result
            unsupported; then nothing was driven).
        timesteps: the listed timesteps of the N-step run, in the library's order (descending for
            reverse steps, ascending for an inversion).
        transitions: the recorded transitions (float64 copies), with the *declared* pairs (t, t_prev):
            the list's neighbour, −1 (or 0 with ``final_alpha_bar_is_one=False``) at the end.
        alphas_cumprod: the target's own ᾱ table as it stores it (cast up to float64); its storage
            dtype (:func:`~ddspec.conformance.tolerances.table_roundoff`) sets the table's error.
        dtype: the dtype the run computed in (``"float32"``, ...).
        coefficient_dtype: the dtype each per-step coefficient is rounded to from a wider table
            (improved-diffusion's ``_extract_into_tensor(...).float()``), or None when the
            coefficients are formed in the table's or the run's dtype.
        library_stride: the stride the library uses for a step's other end, whatever the list says
            (diffusers: ``t − T//N`` for every spacing), or None when it follows the list; the check
            reports every step where the two differ.
        what: one line saying what was run and compared (the result message starts with it).
        reproduce: a snippet that reproduces the run.
        skipped: why the adapter did not drive (e.g. an N the library cannot run), else None.
    """

    kind: str
    family: str
    num_steps: int
    eta: float
    conventions: Conventions
    timesteps: NDArray[np.int64]
    transitions: tuple[Transition, ...]
    alphas_cumprod: Array | None
    dtype: str
    coefficient_dtype: str | None = None
    library_stride: int | None = None
    what: str = ""
    reproduce: str | None = None
    skipped: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in STEP_RECORD_KINDS:
            raise ValueError(f"kind={self.kind!r}: expected one of {list(STEP_RECORD_KINDS)}")
        if self.family not in _FAMILIES:
            raise ValueError(f"family={self.family!r}: expected one of {list(_FAMILIES)}")
        if int(self.num_steps) < 1:
            raise ValueError(f"num_steps={self.num_steps!r}: must be >= 1")
        if not np.isfinite(self.eta) or self.eta < 0:
            raise ValueError(f"eta={self.eta!r}: must be finite and >= 0")
        dtype_name(self.dtype)
        if self.coefficient_dtype is not None:
            dtype_name(self.coefficient_dtype)
        if self.library_stride is not None and int(self.library_stride) < 1:
            raise ValueError(f"library_stride={self.library_stride!r}: must be >= 1 or None")
        if not all(isinstance(tr, Transition) for tr in self.transitions):
            raise ValueError("transitions: every element must be a ddspec.conformance.trajectory.Transition")

    @property
    def name(self) -> str:
        """The result name: ``<family>.<kind>.N=<n>``, with ``,eta=<e>`` for a DDIM ``batch_step_no_noise``."""
        eta = f",eta={self.eta:g}" if self.kind == "batch_step_no_noise" and self.conventions.family == "ddim" else ""
        return f"{self.family}.{self.kind}.N={self.num_steps}{eta}"


@dataclass(frozen=True)
class PostprocessRecord:
    r"""One pipeline run's final state and the library's images of it (all NCHW).

    Attributes:
        num_steps: N of the run.
        state: the final state before post-processing (float64 copy).
        unit: the library's [0, 1] image of ``state`` (float64 copy).
        pixels: the library's uint8 image of ``state``.
        dtype: the dtype the run computed in.
        rounding: the library's declared rounding of 255·(x + 1)/2 to uint8 (``"round"`` or
            ``"truncate"``, as :func:`ddspec.reference.postprocess.to_uint8` names them).
        unit_expression: the library's [0, 1] map as it writes it, for messages.
        reproduce_unit, reproduce_pixels: snippets that reproduce each output.
    """

    num_steps: int
    state: Array
    unit: Array
    pixels: NDArray[np.uint8]
    dtype: str
    rounding: str = "round"
    unit_expression: str = "the [0, 1] output"
    reproduce_unit: str | None = None
    reproduce_pixels: str | None = None

    kind = "postprocess"

    def __post_init__(self) -> None:
        dtype_name(self.dtype)
        if np.shape(self.unit) != np.shape(self.state) or np.shape(self.pixels) != np.shape(self.state):
            raise ValueError(f"unit, pixels: must have the state's shape {np.shape(self.state)}, got "
                             f"{np.shape(self.unit)} and {np.shape(self.pixels)}")
