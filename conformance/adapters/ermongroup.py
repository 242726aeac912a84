r"""A one-line recipe for ermongroup/ddim's ``generalized_steps`` and ``ddpm_steps`` (``functions/denoising.py``).

.. code-block:: python

    from functions.denoising import generalized_steps          # or ddpm_steps
    from ddspec.conformance.adapters.ermongroup import ermongroup_target

    target = ermongroup_target(generalized_steps, runner.betas)  # runner = runners.diffusion.Diffusion(args, config)

What the library does (read in its source; nothing is imported from it here):

* ``generalized_steps(x, seq, model, b, eta=...)`` is DDIM (Song et al. 2021, eq. 12 with σ(η) of eq. 16),
  ``ddpm_steps(x, seq, model, b)`` ancestral DDPM with σ² = β' = 1 − ᾱ_t/ᾱ_next (fixed_large on the
  respaced schedule) and x̂₀ clamped to [−1, 1]. Both walk ``seq`` backwards paired with
  ``seq_next = [-1] + seq[:-1]``, read ᾱ from a zero-padded β (:math:`\bar\alpha_{-1} = 1`), call the
  model with a float ``t``, draw noise with ``torch.randn_like`` (the global RNG), and return
  ``(xs, x0_preds)``; the sample is ``xs[-1]``.
* The runner's ``seq``: ``skip_type="uniform"`` is ``range(0, T, T // N)``, which has
  :math:`\lceil T / \lfloor T/N \rfloor \rceil` entries, i.e. N + 1 (or more) when N does not divide T
  (N = 7, T = 1000: stride 142, 8 steps); ``"quad"`` is ``int(linspace(0, √(0.8 T), N)²)``, which
  repeats index 0 from N = 30 on (the first gap (√(0.8T)/(N−1))² is below 1).
* β is the runner's float32 tensor, so ᾱ is a float32 ``cumprod`` (``table_dtype=torch.float32``).
* The original moves every state to ``'cuda'`` unconditionally: on a machine without CUDA it fails
  (``loop.run``) before the first step.

How the step count is declared (``declare=``): ``"list"`` (default) declares the runner's list as it
is, so N + 1 steps are checked and ``loop.timesteps`` reports the list as *acceptable*, naming the
uniform rule; ``"divisors"`` checks only the N that divide T, where the list has exactly N entries
and equals the leading rule. Without either (a bare ``LoopSampler`` with the default leading rule),
``loop.timesteps`` fails at every N that does not divide T: "the loop called the model N + 1 times".
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..protocol import Conventions
from .loop import LoopSampler

__all__ = ["ermongroup_target", "uniform_seq", "quad_seq", "KINDS", "SKIP_TYPES", "DECLARE"]

KINDS: tuple[str, ...] = ("generalized", "ddpm")
SKIP_TYPES: tuple[str, ...] = ("uniform", "quad")
DECLARE: tuple[str, ...] = ("list", "divisors")


def uniform_seq(T: int, n: int) -> list[int]:
    """The runner's uniform skip: ``range(0, T, T // n)`` (ascending; N + 1 entries when n ∤ T)."""
    return list(range(0, T, T // n))


def quad_seq(T: int, n: int) -> list[int]:
    r"""The runner's quad skip: :math:`\lfloor (k \sqrt{0.8T}/(n-1))^2 \rfloor`, k = 0..n−1 (numpy's linspace, ascending)."""
    return [int(s) for s in (np.linspace(0, np.sqrt(T * 0.8), n) ** 2)]


def ermongroup_target(steps_fn: Callable[..., Any], betas: Any, *, kind: str | None = None, skip_type: str = "uniform",
                      declare: str = "list", name: str | None = None) -> LoopSampler:
    r"""A :class:`~.loop.LoopSampler` for ermongroup/ddim's ``generalized_steps`` or ``ddpm_steps``.

    Args:
        steps_fn: the library's function, called as ``steps_fn(x_T, seq, model, betas[, eta=eta])``.
        betas: the β the runner passes (a float32 tensor of length T, ``runner.betas``).
        kind: ``"generalized"`` (DDIM) or ``"ddpm"``; default from ``steps_fn.__name__``
            (``ddpm_steps`` → ``"ddpm"``, anything else → ``"generalized"``).
        skip_type: the runner's ``--skip_type``: ``"uniform"`` or ``"quad"``.
        declare: ``"list"`` (the runner's list as it is, N + 1 steps where N ∤ T) or ``"divisors"``
            (only N with T % N == 0; uniform only).
        name: the report label (default ``ermongroup.<function name>``).

    Raises:
        ValueError: a bad argument, naming it and its value.
    """
    if not callable(steps_fn):
        raise ValueError(f"steps_fn={steps_fn!r}: must be generalized_steps or ddpm_steps (a callable)")
    if kind is None:
        kind = "ddpm" if getattr(steps_fn, "__name__", "") == "ddpm_steps" else "generalized"
    for arg, value, allowed in (("kind", kind, KINDS), ("skip_type", skip_type, SKIP_TYPES), ("declare", declare, DECLARE)):
        if value not in allowed:
            raise ValueError(f"{arg}={value!r}: must be one of {allowed}")
    if declare == "divisors" and skip_type != "uniform":
        raise ValueError(f"declare={declare!r}: only for skip_type='uniform' (quad lists are declared as they are)")
    b = betas if isinstance(betas, torch.Tensor) else torch.as_tensor(np.asarray(betas))
    if b.ndim != 1 or b.numel() < 2 or not b.is_floating_point():
        raise ValueError(f"betas: must be a 1-D floating tensor of length T >= 2, got shape {tuple(b.shape)} {b.dtype}")
    T = int(b.numel())
    seq_of = uniform_seq if skip_type == "uniform" else quad_seq

    def sample(model: Callable, x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0) -> torch.Tensor:
        extra = {"eta": eta} if kind == "generalized" else {}
        xs, _ = steps_fn(x_T, seq_of(T, num_steps), model, b, **extra)
        return xs[-1]

    def ddpm_sample(model: Callable, x_T: torch.Tensor, num_steps: int) -> torch.Tensor:
        return sample(model, x_T, num_steps)

    if kind == "generalized":
        conv = Conventions(family="ddim", num_train_timesteps=T, beta_schedule="custom",
                           trained_betas=tuple(float(v) for v in b.double().tolist()), supports_noise_injection=False)
    else:
        conv = Conventions(family="ddpm", num_train_timesteps=T, beta_schedule="custom",
                           trained_betas=tuple(float(v) for v in b.double().tolist()), variance_type="fixed_large",
                           clip_sample=True, supports_noise_injection=False)
    declared: dict[str, Any]
    if declare == "divisors":
        declared = {"supported_num_steps": lambda n: T % n == 0}
    else:
        declared = {"timesteps": lambda n: seq_of(T, n)[::-1]}
    fn_name = getattr(steps_fn, "__name__", "steps")
    return LoopSampler(sample if kind == "generalized" else ddpm_sample, conv, name=name or f"ermongroup.{fn_name}",
                       accepts_eta=kind == "generalized", accepts_generator=False, noise_source="global",
                       table_dtype=torch.float32 if b.dtype == torch.float32 else None, **declared)
