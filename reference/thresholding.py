r"""Clipping and dynamic thresholding of the predicted clean sample x̂₀.

Samplers that work in pixel space keep x̂₀ inside the data range [−1, 1] before forming the step's
mean: static clipping (Ho et al. 2020's released code; diffusers' ``clip_sample``, on by default in
its DDPM and DDIM) or, for large guidance weights, dynamic thresholding (Saharia et al. 2022, Imagen,
§2.3). When both are requested, thresholding wins, as in diffusers (:func:`constrain_x0`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .validation import as_array, as_scalar, fail

__all__ = ["clip_x0", "dynamic_threshold_scale", "dynamic_threshold", "constrain_x0"]

Array = NDArray[np.float64]


def clip_x0(x0: ArrayLike, clip_range: float = 1.0) -> Array:
    r"""Static clipping of x̂₀ to ±``clip_range`` (``clip_range`` > 0).

    .. math:: \hat x_0 \leftarrow \min(\max(\hat x_0, -c), c)

    Source: Ho et al. 2020's released sampler clips x̂₀ to [−1, 1] (the data range, §3.3);
    diffusers' ``clip_sample`` / ``clip_sample_range`` (default 1.0). Exact (no rounding).
    """
    x = as_array(x0, "x0")
    c = as_scalar(clip_range, "clip_range", low=0.0, low_open=True)
    return np.clip(x, -c, c)


def _per_sample(x0: ArrayLike) -> tuple[Array, Array]:
    x = as_array(x0, "x0")
    if x.ndim < 2:
        fail("x0", x0, f"needs a batch axis and at least one sample axis (ndim >= 2), got shape {x.shape}")
    return x, x.reshape(x.shape[0], -1)


def dynamic_threshold_scale(x0: ArrayLike, ratio: float = 0.995, max_value: float = 1.0) -> Array:
    r"""The per-sample threshold s of dynamic thresholding, shape ``(batch,)``.

    .. math:: s_b = \min\big(\max(Q_{r}(|\hat x_0^{(b)}|),\ 1),\ s_{\max}\big)

    :math:`Q_r` is the ``ratio`` quantile of the absolute values of sample b (axis 0 is the batch;
    all other axes are flattened). The quantile is numpy's default ``method="linear"``
    (Hyndman & Fan type 7: with the n sorted values :math:`a_0 \le \dots \le a_{n-1}` and
    :math:`h = (n-1)r`, :math:`Q = a_{\lfloor h\rfloor} + (h - \lfloor h\rfloor)(a_{\lfloor h\rfloor+1} - a_{\lfloor h\rfloor})`),
    which is also ``torch.quantile``'s default, the one diffusers uses.

    Source: Saharia et al. 2022 (Imagen), §2.3: s is "a certain percentile absolute pixel value"
    and thresholding applies when s > 1 (clamping s below at 1 gives static clipping otherwise).
    The upper clamp at ``max_value`` (diffusers' ``sample_max_value``) is diffusers' addition.
    ``ratio`` ∈ [0, 1] (diffusers' ``dynamic_thresholding_ratio``), ``max_value`` ≥ 1.
    """
    _, flat = _per_sample(x0)
    r = as_scalar(ratio, "ratio", low=0.0, high=1.0)
    mx = as_scalar(max_value, "max_value", low=1.0)
    q = np.quantile(np.abs(flat), r, axis=1, method="linear")
    return np.minimum(np.maximum(q, 1.0), mx)


def dynamic_threshold(x0: ArrayLike, ratio: float = 0.995, max_value: float = 1.0) -> Array:
    r"""Dynamic thresholding of x̂₀ (Saharia et al. 2022, Imagen, §2.3, as diffusers implements it).

    .. math:: \hat x_0^{(b)} \leftarrow \frac{\min(\max(\hat x_0^{(b)}, -s_b), s_b)}{s_b}

    with :math:`s_b` from :func:`dynamic_threshold_scale` (per sample: axis 0 is the batch, the
    quantile runs over all other axes; numpy's linear quantile). Where :math:`s_b = 1` this is static
    clipping to [−1, 1]. The clamp is exact and the division is one correctly rounded operation.
    """
    x, _ = _per_sample(x0)
    s = dynamic_threshold_scale(x, ratio, max_value).reshape((x.shape[0],) + (1,) * (x.ndim - 1))
    return np.clip(x, -s, s) / s


def constrain_x0(
    x0: ArrayLike,
    *,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    thresholding: bool = False,
    dynamic_thresholding_ratio: float = 0.995,
    sample_max_value: float = 1.0,
) -> Array:
    r"""Apply the x̂₀ constraint a sampler step asks for: dynamic thresholding, else clipping, else none.

    .. math::

        \hat x_0 \leftarrow \begin{cases}
          \text{dynamic\_threshold}(\hat x_0) & \text{thresholding} \\
          \text{clip}(\hat x_0, \pm c) & \text{clip\_sample} \\
          \hat x_0 & \text{otherwise}\end{cases}

    The precedence (thresholding over clipping) is diffusers' (DDPM and DDIM ``step``). The keyword
    names are diffusers' scheduler options; note that diffusers defaults ``clip_sample`` to True,
    this function to False.
    """
    for name, flag in (("clip_sample", clip_sample), ("thresholding", thresholding)):
        if not isinstance(flag, (bool, np.bool_)):
            fail(name, flag, "expected a bool")
    x = as_array(x0, "x0")
    if thresholding:
        r = as_scalar(dynamic_thresholding_ratio, "dynamic_thresholding_ratio", low=0.0, high=1.0)
        mx = as_scalar(sample_max_value, "sample_max_value", low=1.0)
        return dynamic_threshold(x, r, mx)
    if clip_sample:
        c = as_scalar(clip_sample_range, "clip_sample_range", low=0.0, low_open=True)
        return clip_x0(x, c)
    return x
