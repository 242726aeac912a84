r"""Tests for ddspec.conformance.torch_port.ReferencePort.

Every expected value is computed here, in mpmath at 50 digits, from the papers' formulas with the
port's β table as the exact input: ᾱ_t = ∏(1 − β_i), the DDPM posterior (Ho et al. 2020, eq. 7,
respaced β' = 1 − ᾱ_t/ᾱ_s), DDIM eq. 12 with σ(η) of eq. 16, and the ε/x₀/v conversions. Tolerances
are relative to the size of the terms that are summed (|c₁ x̂₀| + |c₂ x_t| + |σ z|), so that
cancellation between terms does not hide or fake an error. Measured in float64: ≤ 6e-16 (DDPM) and
≤ 1.7e-15 (DDIM); the textbook β' = 1 − ᾱ_t/ᾱ_s in float64 would give 1.5e-13 at the step 1 → 0,
which the 1e-13 tolerance rejects.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
import torch

from ddspec.conformance.protocol import Conventions, Sampler
from ddspec.conformance.torch_port import ReferencePort, make_reference_port
from ddspec.reference import SingularError
from ddspec.reference.schedules import linear_betas

mp.mp.dps = 50
SHAPE = (2, 3, 2, 2)


def _mp_alpha_bars(betas: np.ndarray) -> list[mp.mpf]:
    out, p = [], mp.mpf(1)
    for b in betas.tolist():
        p *= 1 - mp.mpf(b)
        out.append(p)
    return out


_AB_CACHE: dict[bytes, list[mp.mpf]] = {}


def _ab(betas: np.ndarray, i: int) -> mp.mpf:
    key = betas.tobytes()
    if key not in _AB_CACHE:
        _AB_CACHE[key] = _mp_alpha_bars(betas)
    return mp.mpf(1) if i < 0 else _AB_CACHE[key][i]


def _x0_eps(out: float, x: float, ab: mp.mpf, prediction_type: str) -> tuple[mp.mpf, mp.mpf]:
    o, xx = mp.mpf(out), mp.mpf(x)
    if prediction_type == "epsilon":
        return (xx - mp.sqrt(1 - ab) * o) / mp.sqrt(ab), o
    if prediction_type == "sample":
        return o, (xx - mp.sqrt(ab) * o) / mp.sqrt(1 - ab)
    return mp.sqrt(ab) * xx - mp.sqrt(1 - ab) * o, mp.sqrt(ab) * o + mp.sqrt(1 - ab) * xx  # v (Salimans & Ho §4)


def _tensors(seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x, out, z = (torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(3))
    return x.to(dtype), out.to(dtype), z.to(dtype)


def mp_ddpm(betas, t, s, x, out, z, *, prediction_type="epsilon", variance_type="fixed_small", pv=None, clip=None):
    r"""Ho et al. 2020, eq. 7 on the respaced schedule, elementwise, plus σ z for s >= 0. Returns (expected, scale)."""
    ab_t, ab_s = _ab(betas, t), _ab(betas, s)
    beta_p = 1 - ab_t / ab_s
    c1 = mp.sqrt(ab_s) * beta_p / (1 - ab_t)
    c2 = mp.sqrt(ab_t / ab_s) * (1 - ab_s) / (1 - ab_t)
    beta_tilde = beta_p * (1 - ab_s) / (1 - ab_t)
    xs, os_, zs = x.double().flatten().tolist(), out.double().flatten().tolist(), z.double().flatten().tolist()
    pvs = pv.double().flatten().tolist() if pv is not None else [None] * len(xs)
    exp, scale = [], []
    for xi, oi, zi, vi in zip(xs, os_, zs, pvs):
        x0, _ = _x0_eps(oi, xi, ab_t, prediction_type)
        if clip is not None:
            x0 = min(max(x0, -clip), clip)
        if s < 0:
            sigma = mp.mpf(0)
        elif variance_type == "fixed_small":
            sigma = mp.sqrt(beta_tilde)
        elif variance_type == "fixed_large":
            sigma = mp.sqrt(beta_p)
        else:  # learned_range, Nichol & Dhariwal 2021 eq. 15
            frac = (mp.mpf(vi) + 1) / 2
            sigma = mp.exp((frac * mp.log(beta_p) + (1 - frac) * mp.log(beta_tilde)) / 2)
        exp.append(c1 * x0 + c2 * xi + sigma * zi)
        scale.append(abs(c1 * x0) + abs(c2 * xi) + abs(sigma * zi))
    return np.array([float(v) for v in exp]).reshape(SHAPE), np.array([float(v) for v in scale]).reshape(SHAPE)


def mp_ddim(betas, t, s, x, out, z, *, eta, prediction_type="epsilon", clip=None, clipped_eps=False):
    r"""Song et al. 2021 eq. 12 with σ of eq. 16, elementwise. Returns (expected, scale)."""
    ab_t, ab_s = _ab(betas, t), _ab(betas, s)
    eta = mp.mpf(eta)
    sigma = eta * mp.sqrt((1 - ab_s) / (1 - ab_t)) * mp.sqrt(1 - ab_t / ab_s)
    d = mp.sqrt(1 - ab_s - sigma**2)
    exp, scale = [], []
    for xi, oi, zi in zip(x.double().flatten().tolist(), out.double().flatten().tolist(), z.double().flatten().tolist()):
        x0, eps = _x0_eps(oi, xi, ab_t, prediction_type)
        if clip is not None:
            x0 = min(max(x0, -clip), clip)
            if clipped_eps:
                eps = (xi - mp.sqrt(ab_t) * x0) / mp.sqrt(1 - ab_t)
        exp.append(mp.sqrt(ab_s) * x0 + d * eps + sigma * zi)
        scale.append(abs(mp.sqrt(ab_s) * x0) + abs(d * eps) + abs(sigma * zi))
    return np.array([float(v) for v in exp]).reshape(SHAPE), np.array([float(v) for v in scale]).reshape(SHAPE)


def assert_close(got: torch.Tensor, expected: np.ndarray, scale: np.ndarray, rtol: float) -> None:
    err = np.abs(got.detach().cpu().double().numpy() - expected)
    worst = float(np.max(err / scale))
    assert worst <= rtol, f"max scaled error {worst:.3e} > {rtol:.1e}"


# ---------------------------------------------------------------------------------------------- protocol


def test_port_is_a_sampler_and_declares_its_conventions() -> None:
    p = make_reference_port()
    assert isinstance(p, Sampler)
    c = p.conventions
    assert isinstance(c, Conventions)
    assert (c.family, c.beta_schedule, c.num_train_timesteps, c.variance_type) == ("ddim", "linear", 1000, None)
    assert c.final_alpha_bar_is_one and c.supports_noise_injection and c.unsupported == ()
    np.testing.assert_array_equal(p.betas(), linear_betas(1000, 1e-4, 0.02))
    # leading spacing: k * (1000 // 10), k = 9..0
    np.testing.assert_array_equal(p.timesteps(10), np.arange(9, -1, -1) * 100)
    assert p.timesteps(10).dtype == np.int64
    # alphas_cumprod: ∏(1 − β), checked against the 50-digit product
    ab = p.alphas_cumprod()
    for i in (0, 499, 999):
        assert abs(ab[i] - float(_ab(p.betas(), i))) <= 2 * np.spacing(ab[i])


def test_custom_betas_are_declared_custom() -> None:
    b = np.full(20, 0.05)
    p = ReferencePort(b, family="ddpm")
    assert p.conventions.beta_schedule == "custom"
    assert p.conventions.trained_betas == tuple([0.05] * 20)
    assert p.conventions.variance_type == "fixed_small"


# ---------------------------------------------------------------------------------------------- DDPM


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize(("num_steps", "t", "s"), [(10, 900, 800), (1000, 500, 499), (1000, 1, 0), (10, 100, 0), (10, 0, -1)])
def test_ddpm_step_float64_matches_closed_form(prediction_type: str, num_steps: int, t: int, s: int) -> None:
    p = ReferencePort(family="ddpm", prediction_type=prediction_type)
    x, out, z = _tensors(1)
    got = p.step(out, t, x, num_steps=num_steps, noise=z)
    assert got.dtype == torch.float64
    exp, scale = mp_ddpm(p.betas(), t, s, x, out, z, prediction_type=prediction_type)
    assert_close(got, exp, scale, 1e-13)


@pytest.mark.parametrize("variance_type", ["fixed_large", "learned_range"])
def test_ddpm_variance_types_match_closed_form(variance_type: str) -> None:
    p = ReferencePort(family="ddpm", variance_type=variance_type, beta_schedule="cosine")
    x, out, z = _tensors(2)
    pv = torch.tanh(out * 3) if variance_type == "learned_range" else None
    got = p.step(out, 750, x, num_steps=4, noise=z, predicted_variance=pv)  # leading N=4: 750 -> 500
    exp, scale = mp_ddpm(p.betas(), 750, 500, x, out, z, variance_type=variance_type, pv=pv)
    assert_close(got, exp, scale, 1e-13)


def test_ddpm_clip_sample() -> None:
    p = ReferencePort(family="ddpm", clip_sample=True, clip_sample_range=0.5)
    x, out, z = _tensors(3)
    got = p.step(out, 100, x, num_steps=10, noise=z)
    exp, scale = mp_ddpm(p.betas(), 100, 0, x, out, z, clip=mp.mpf(0.5))
    assert_close(got, exp, scale, 1e-13)


def test_ddpm_dynamic_thresholding() -> None:
    r"""Saharia et al. 2022 §2.3: s = quantile(|x̂₀|, r) per sample, clamped to [1, s_max]; x̂₀ ← clamp(x̂₀, ±s)/s."""
    p = ReferencePort(family="ddpm", prediction_type="sample", thresholding=True,
                      dynamic_thresholding_ratio=0.9, sample_max_value=3.0)
    x, out, z = _tensors(4)
    out = out * 2.0
    flat = out.numpy().reshape(SHAPE[0], -1)
    s = np.clip(np.quantile(np.abs(flat), 0.9, axis=1), 1.0, 3.0)[:, None]  # numpy's linear quantile
    assert np.all((s > 1.0) & (s < 3.0))  # the test exercises the non-trivial branch
    x0 = torch.from_numpy((np.clip(flat, -s, s) / s).reshape(SHAPE))
    got = p.step(out, 100, x, num_steps=10, noise=z)
    exp, scale = mp_ddpm(p.betas(), 100, 0, x, x0, z, prediction_type="sample")
    assert_close(got, exp, scale, 1e-13)


def test_ddpm_last_step_adds_no_noise() -> None:
    p = ReferencePort(family="ddpm")
    x, out, z = _tensors(5)
    a = p.step(out, 0, x, num_steps=10, noise=z)
    b = p.step(out, 0, x, num_steps=10, noise=-z)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- DDIM


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("num_steps", "t", "s"), [(20, 999, 949), (20, 49, -1), (1000, 1, 0)])
def test_ddim_step_float64_matches_closed_form(prediction_type: str, eta: float, num_steps: int, t: int, s: int) -> None:
    p = ReferencePort(family="ddim", beta_schedule="cosine", timestep_spacing="trailing", prediction_type=prediction_type)
    # trailing, T=1000, N=20: round(1000 - 50k) - 1 = 999, 949, ..., 49
    np.testing.assert_array_equal(p.timesteps(20), 999 - 50 * np.arange(20))
    x, out, z = _tensors(6)
    got = p.step(out, t, x, num_steps=num_steps, eta=eta, noise=z)
    exp, scale = mp_ddim(p.betas(), t, s, x, out, z, eta=eta, prediction_type=prediction_type)
    assert_close(got, exp, scale, 1e-13)


def test_ddim_use_clipped_model_output() -> None:
    p = ReferencePort(clip_sample=True, use_clipped_model_output=True)
    x, out, z = _tensors(7)
    x = x * 3.0  # so that x̂₀ is clipped somewhere
    got = p.step(out, 100, x, num_steps=10, eta=0.3, noise=z)
    exp, scale = mp_ddim(p.betas(), 100, 0, x, out, z, eta=0.3, clip=mp.mpf(1), clipped_eps=True)
    assert_close(got, exp, scale, 1e-13)
    plain, _ = mp_ddim(p.betas(), 100, 0, x, out, z, eta=0.3, clip=mp.mpf(1), clipped_eps=False)
    assert np.max(np.abs(plain - exp)) > 1e-3  # the option matters for this input


def test_zero_terminal_snr_eps_is_singular_v_is_not() -> None:
    p = ReferencePort(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    assert p.alphas_cumprod()[-1] == 0.0
    x, out, _ = _tensors(8)
    with pytest.raises(SingularError):
        p.step(out, 999, x, num_steps=10)
    q = ReferencePort(rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")
    assert torch.isfinite(q.step(out, 999, x, num_steps=10)).all()


# ---------------------------------------------------------------------------------------------- dtypes, devices


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 2e-6), (torch.bfloat16, 3e-2), (torch.float16, 3e-3)])
@pytest.mark.parametrize("family", ["ddpm", "ddim"])
def test_low_precision_runs_in_its_dtype(dtype: torch.dtype, rtol: float, family: str) -> None:
    p = ReferencePort(family=family)
    x, out, z = _tensors(9, dtype)
    got = p.step(out, 500, x, num_steps=10, eta=1.0, noise=z)
    assert got.dtype == dtype
    # expected from the rounded inputs the target actually received
    if family == "ddpm":
        exp, scale = mp_ddpm(p.betas(), 500, 400, x, out, z)
    else:
        exp, scale = mp_ddim(p.betas(), 500, 400, x, out, z, eta=1.0)
    assert_close(got, exp, scale, rtol)


def test_generator_noise_is_reproducible() -> None:
    p = ReferencePort(family="ddpm")
    x, out, _ = _tensors(10)
    a = p.step(out, 500, x, num_steps=10, generator=torch.Generator().manual_seed(3))
    b = p.step(out, 500, x, num_steps=10, generator=torch.Generator().manual_seed(3))
    c = p.step(out, 500, x, num_steps=10, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_inputs_are_not_mutated() -> None:
    p = ReferencePort(family="ddpm", variance_type="learned_range", clip_sample=True)
    x, out, z = _tensors(11)
    pv = torch.tanh(out)
    before = [v.clone() for v in (x, out, z, pv)]
    p.step(out, 500, x, num_steps=10, noise=z, predicted_variance=pv)
    assert all(torch.equal(a, b) for a, b in zip(before, (x, out, z, pv)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("family", ["ddpm", "ddim"])
def test_cuda_float64_matches_closed_form(family: str) -> None:
    p = ReferencePort(family=family)
    x, out, z = _tensors(12)
    got = p.step(out.cuda(), 500, x.cuda(), num_steps=10, eta=1.0, noise=z.cuda())
    assert got.device.type == "cuda" and got.dtype == torch.float64
    if family == "ddpm":
        exp, scale = mp_ddpm(p.betas(), 500, 400, x, out, z)
    else:
        exp, scale = mp_ddim(p.betas(), 500, 400, x, out, z, eta=1.0)
    assert_close(got, exp, scale, 1e-13)


# ---------------------------------------------------------------------------------------------- validation


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="family"):
        ReferencePort(family="ddpmx")
    with pytest.raises(ValueError, match="variance_type"):
        ReferencePort(family="ddpm", variance_type="learned")
    with pytest.raises(ValueError, match="variance_type"):
        ReferencePort(family="ddim", variance_type="fixed_large")
    with pytest.raises(ValueError, match="beta_schedule"):
        ReferencePort(np.full(10, 0.1), beta_schedule="linear")
    with pytest.raises(ValueError, match="beta_schedule"):
        ReferencePort(beta_schedule="laplace")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        ReferencePort(np.full(10, 0.1), num_train_timesteps=11)
    with pytest.raises(ValueError, match="prediction_type"):
        ReferencePort(prediction_type="flow")
    with pytest.raises(ValueError, match="timestep_spacing"):
        ReferencePort(timestep_spacing="custom")
    with pytest.raises(ValueError, match="betas"):
        ReferencePort(np.array([0.1, 1.5]))


def test_step_validation() -> None:
    p = ReferencePort(family="ddpm")
    x, out, z = _tensors(13)
    with pytest.raises(ValueError, match="t="):
        p.step(out, 901, x, num_steps=10)
    with pytest.raises(ValueError, match="num_steps"):
        p.step(out, 900, x, num_steps=0)
    with pytest.raises(ValueError, match="noise"):
        p.step(out, 900, x, num_steps=10, noise=z[0])
    with pytest.raises(ValueError, match="model_output"):
        p.step(out[0], 900, x, num_steps=10)
    with pytest.raises(ValueError, match="predicted_variance"):
        p.step(out, 900, x, num_steps=10, predicted_variance=z)
    with pytest.raises(ValueError, match="predicted_variance"):
        ReferencePort(family="ddpm", variance_type="learned_range").step(out, 900, x, num_steps=10)
    with pytest.raises(ValueError, match="eta"):
        p.step(out, 900, x, num_steps=10, eta=-0.1)
    # DDIM eq. 7 needs σ² <= 1 − ᾱ_prev; at η = 5 the step 900 -> 800 violates it (σ² = 25 β̃ > 1 − ᾱ_800)
    with pytest.raises(ValueError, match="eta"):
        ReferencePort().step(out, 900, x, num_steps=10, eta=5.0)
    with pytest.raises(ValueError, match="steps_offset"):
        ReferencePort(steps_offset=1).timesteps(1000)
