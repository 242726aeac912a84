r"""A stand-in for ermongroup/ddim's sampling functions (``functions/denoising.py``, ``runners/diffusion.py``).

Written from the repository's interface and equations (read at commit e8df66c); no code is
copied. Kept, because the adapter recipe and the harness depend on them:

* ``compute_alpha(beta, t)``: ᾱ at index t from β padded with a leading 0 and ``cumprod``-ed, so
  ``t = -1`` reads ᾱ = 1; shape ``[n, 1, 1, 1]``;
* ``generalized_steps(x, seq, model, b, **kwargs)``: DDIM (Song et al. 2021, eq. 12, σ(η) of eq. 16,
  ``eta`` from ``kwargs``, default 0) walked over ``zip(reversed(seq), reversed([-1] + seq[:-1]))``;
  the model is called as ``model(x, t)`` with a *float* tensor ``torch.ones(n) * i``; noise from
  ``torch.randn_like`` (the global RNG); returns ``(xs, x0_preds)`` with ``xs[0]`` the start;
* ``ddpm_steps(x, seq, model, b)``: ancestral DDPM on the same pairs with β' = 1 − ᾱ_t/ᾱ_next (the
  respaced β), x̂₀ clamped to [−1, 1], σ² = β' (``logvar = beta_t.log()``, i.e. fixed_large), no noise
  where ``t == 0`` (a mask on the *current* index), model called with ``t.float()``;
* ``get_beta_schedule`` (float64 numpy: linear, quad, const, jsd, sigmoid) and the runner's
  ``uniform`` / ``quad`` sequences: ``range(0, T, T // N)`` (N + 1 entries when N does not divide T)
  and ``int(linspace(0, √(0.8 T), N)²)``; the runner turns β into a float32 tensor
  (``torch.from_numpy(betas).float()``).

One deviation, a known quirk of the original: it moves every state to ``'cuda'`` unconditionally
(``xs[-1].to('cuda')``), so the original cannot run on a machine without CUDA; here the state stays on
``x``'s device (``device=`` reproduces the original's move when given).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

__all__ = ["compute_alpha", "generalized_steps", "ddpm_steps", "get_beta_schedule", "uniform_seq", "quad_seq"]


def get_beta_schedule(beta_schedule: str, *, beta_start: float, beta_end: float, num_diffusion_timesteps: int) -> np.ndarray:
    T = num_diffusion_timesteps
    if beta_schedule == "quad":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    elif beta_schedule == "linear":
        betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
    elif beta_schedule == "const":
        betas = beta_end * np.ones(T, dtype=np.float64)
    elif beta_schedule == "jsd":
        betas = 1.0 / np.linspace(T, 1, T, dtype=np.float64)
    elif beta_schedule == "sigmoid":
        betas = 1 / (np.exp(-np.linspace(-6, 6, T)) + 1) * (beta_end - beta_start) + beta_start
    else:
        raise NotImplementedError(beta_schedule)
    assert betas.shape == (T,)
    return betas


def uniform_seq(T: int, n: int) -> range:
    """The runner's ``skip_type="uniform"``: ``range(0, T, T // n)``."""
    return range(0, T, T // n)


def quad_seq(T: int, n: int) -> list[int]:
    """The runner's ``skip_type="quad"``: ``int(linspace(0, √(0.8 T), n)²)``."""
    return [int(s) for s in list(np.linspace(0, np.sqrt(T * 0.8), n) ** 2)]


def compute_alpha(beta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    padded = torch.cat([torch.zeros(1, dtype=beta.dtype).to(beta.device), beta], dim=0)
    return (1 - padded).cumprod(dim=0).index_select(0, t + 1).view(-1, 1, 1, 1)


def generalized_steps(x: torch.Tensor, seq: Any, model: Callable, b: torch.Tensor, device: str | None = None,
                      **kwargs: Any) -> tuple[list, list]:
    with torch.no_grad():
        n = x.size(0)
        seq_next = [-1] + list(seq[:-1])
        x0_preds, xs = [], [x]
        for i, j in zip(reversed(seq), reversed(seq_next)):
            t = (torch.ones(n) * i).to(x.device)
            next_t = (torch.ones(n) * j).to(x.device)
            at = compute_alpha(b, t.long())
            at_next = compute_alpha(b, next_t.long())
            xt = xs[-1].to(device or x.device)
            et = model(xt, t)
            x0_t = (xt - et * (1 - at).sqrt()) / at.sqrt()
            x0_preds.append(x0_t.to("cpu"))
            c1 = kwargs.get("eta", 0) * ((1 - at / at_next) * (1 - at_next) / (1 - at)).sqrt()
            c2 = ((1 - at_next) - c1**2).sqrt()
            xs.append((at_next.sqrt() * x0_t + c1 * torch.randn_like(x) + c2 * et).to("cpu"))
    return xs, x0_preds


def ddpm_steps(x: torch.Tensor, seq: Any, model: Callable, b: torch.Tensor, device: str | None = None,
               **kwargs: Any) -> tuple[list, list]:
    with torch.no_grad():
        n = x.size(0)
        seq_next = [-1] + list(seq[:-1])
        xs, x0_preds = [x], []
        for i, j in zip(reversed(seq), reversed(seq_next)):
            t = (torch.ones(n) * i).to(x.device)
            next_t = (torch.ones(n) * j).to(x.device)
            at = compute_alpha(b, t.long())
            atm1 = compute_alpha(b, next_t.long())
            beta_t = 1 - at / atm1
            xc = xs[-1].to(device or x.device)
            e = model(xc, t.float())
            x0 = (1.0 / at).sqrt() * xc - (1.0 / at - 1).sqrt() * e
            if kwargs.get("_clip", True):  # not in the original, which always clamps; for the tests' control only
                x0 = torch.clamp(x0, -1, 1)
            x0_preds.append(x0.to("cpu"))
            mean = ((atm1.sqrt() * beta_t) * x0 + ((1 - beta_t).sqrt() * (1 - atm1)) * xc) / (1.0 - at)
            noise = torch.randn_like(xc)
            mask = (1 - (t == 0).float()).view(-1, 1, 1, 1)
            xs.append((mean + mask * torch.exp(0.5 * beta_t.log()) * noise).to("cpu"))
    return xs, x0_preds
