r"""Tests for ddspec.conformance.protocol and ddspec.conformance.adapters.

Expected conventions are diffusers' documented defaults (``DDPMScheduler``/``DDIMScheduler`` docstrings)
and the Stable Diffusion scheduler config (scaled_linear 0.00085–0.012, set_alpha_to_one=False,
steps_offset=1, clip_sample=False). Expected step outputs are computed here in mpmath (50 digits) from
the DDPM posterior (Ho et al. 2020, eq. 7, respaced β' = 1 − ᾱ_t/ᾱ_s) and DDIM eq. 12/16, with the
target's own ᾱ table (as it stores it) as the exact input.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import mpmath as mp
import numpy as np
import pytest
import torch

from ddspec.conformance import protocol
from ddspec.conformance.adapters import DiffusersDDIMAdapter, DiffusersDDPMAdapter, FunctionSampler, adapt
from ddspec.conformance.protocol import Conventions, Sampler, declared_timesteps
from ddspec.conformance.torch_port import make_reference_port
from ddspec.reference.alphas import alpha_bar
from ddspec.reference.schedules import scaled_linear_betas

import diffusers  # noqa: E402  (a test dependency: the [test] extra installs it)
from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402
from diffusers.schedulers import scheduling_ddpm  # noqa: E402
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput  # noqa: E402

mp.mp.dps = 50
SHAPE = (2, 3, 2, 2)
SD_CONFIG = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                 set_alpha_to_one=False, steps_offset=1, clip_sample=False)


def _tensors(seed: int, n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(n)]


def _float64_tables(s: DDPMScheduler | DDIMScheduler) -> None:
    """Test setup: give the target float64 tables so that its step can be compared at float64 precision."""
    s.betas = s.betas.double()
    s.alphas_cumprod = torch.cumprod(1.0 - s.betas, dim=0)
    if isinstance(s, DDPMScheduler):
        s.one = torch.tensor(1.0, dtype=torch.float64)
    else:
        s.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if s.config.set_alpha_to_one else s.alphas_cumprod[0]


def _scaled_close(got: torch.Tensor, exp: list[mp.mpf], scale: list[mp.mpf], rtol: float) -> None:
    g = got.detach().double().flatten().tolist()
    worst = max(float(abs(gi - e) / sc) for gi, e, sc in zip(g, exp, scale))
    assert worst <= rtol, f"max scaled error {worst:.3e} > {rtol:.1e}"


def mp_ddpm(ab: np.ndarray, t: int, s: int, x, eps, z, *, variance_type="fixed_small", pv=None):
    r"""Ho et al. 2020 eq. 7 (respaced), ε-prediction, no clipping, plus σ z; ᾱ from the target's table."""
    ab_t = mp.mpf(float(ab[t]))
    ab_s = mp.mpf(1) if s < 0 else mp.mpf(float(ab[s]))
    beta_p = 1 - ab_t / ab_s
    beta_tilde = beta_p * (1 - ab_s) / (1 - ab_t)
    c1 = mp.sqrt(ab_s) * beta_p / (1 - ab_t)
    c2 = mp.sqrt(ab_t / ab_s) * (1 - ab_s) / (1 - ab_t)
    exp, scale = [], []
    pvs = pv.flatten().tolist() if pv is not None else [None] * x.numel()
    for xi, ei, zi, vi in zip(x.flatten().tolist(), eps.flatten().tolist(), z.flatten().tolist(), pvs):
        x0 = (xi - mp.sqrt(1 - ab_t) * ei) / mp.sqrt(ab_t)
        if variance_type == "fixed_small":
            var = beta_tilde
        elif variance_type == "fixed_large":
            var = beta_p
        elif variance_type == "learned":  # diffusers: the model output is the variance
            var = mp.mpf(vi)
        else:  # learned_range, Nichol & Dhariwal 2021 eq. 15
            f = (mp.mpf(vi) + 1) / 2
            var = mp.exp(f * mp.log(beta_p) + (1 - f) * mp.log(beta_tilde))
        sigma = mp.sqrt(var)
        exp.append(c1 * x0 + c2 * xi + sigma * zi)
        scale.append(abs(c1 * x0) + abs(c2 * xi) + abs(sigma * zi))
    return exp, scale


# ================================================================================== protocol


def test_conventions_validation() -> None:
    with pytest.raises(ValueError, match="family"):
        Conventions(family="ddpmx", num_train_timesteps=10, variance_type="fixed_small")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        Conventions(family="ddim", num_train_timesteps=0)
    with pytest.raises(ValueError, match="beta_schedule"):
        Conventions(family="ddim", num_train_timesteps=10, beta_schedule="laplace")
    with pytest.raises(ValueError, match="variance_type"):
        Conventions(family="ddim", num_train_timesteps=10, variance_type="fixed_small")
    with pytest.raises(ValueError, match="variance_type"):
        Conventions(family="ddpm", num_train_timesteps=10)
    with pytest.raises(ValueError, match="use_clipped_model_output"):
        Conventions(family="ddpm", num_train_timesteps=10, variance_type="fixed_small", use_clipped_model_output=True)
    with pytest.raises(ValueError, match="beta_schedule"):
        Conventions(family="ddim", num_train_timesteps=2, beta_schedule="custom")
    with pytest.raises(ValueError, match="trained_betas"):
        Conventions(family="ddim", num_train_timesteps=3, beta_schedule="custom", trained_betas=(0.1, 0.2))
    with pytest.raises(ValueError, match="clip_sample"):
        Conventions(family="ddim", num_train_timesteps=3, clip_sample=1)
    with pytest.raises(ValueError, match="unsupported"):
        Conventions(family="ddim", num_train_timesteps=3, unsupported=["x"])  # type: ignore[arg-type]


def test_unknown_value_is_accepted_only_when_declared_unsupported() -> None:
    c = Conventions(family="ddim", num_train_timesteps=10, beta_schedule="laplace",
                    unsupported=("beta_schedule='laplace': no ddspec schedule",))
    assert c.beta_schedule == "laplace" and not c.fully_supported
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.family = "ddpm"  # type: ignore[misc]


def test_declared_timesteps_rules() -> None:
    c = Conventions(family="ddim", num_train_timesteps=1000, steps_offset=1)
    # leading: k * (1000 // 50) + 1, k = 49..0
    np.testing.assert_array_equal(declared_timesteps(c, 50), np.arange(49, -1, -1) * 20 + 1)
    # trailing: round(1000 - k * 1000/3) - 1 = 999, round(666.67) - 1, round(333.33) - 1; offset ignored
    tr = dataclasses.replace(c, timestep_spacing="trailing")
    np.testing.assert_array_equal(declared_timesteps(tr, 3), [999, 666, 332])
    # linspace: round(k * 999/3), reversed
    ls = dataclasses.replace(c, timestep_spacing="linspace")
    np.testing.assert_array_equal(declared_timesteps(ls, 4), [999, 666, 333, 0])
    with pytest.raises(ValueError, match="timestep_spacing"):
        declared_timesteps(dataclasses.replace(c, timestep_spacing="custom"), 4)
    with pytest.raises(ValueError, match="num_steps"):
        declared_timesteps(c, 1001)
    with pytest.raises(ValueError, match="steps_offset"):
        declared_timesteps(c, 1000)  # leading 999 + 1 runs past T - 1


def test_docstring_example_is_a_working_sampler() -> None:
    doc = protocol.__doc__
    assert doc is not None
    code = re.search(r"\.\. code-block:: python\n\n(.*?)\n\n(?=\S)", doc, re.S)
    assert code is not None
    source = "\n".join(line[4:] for line in code.group(1).splitlines())
    namespace: dict[str, object] = {}
    exec(compile(source, "<protocol example>", "exec"), namespace)
    sampler = namespace["MyDDIM"]()  # type: ignore[operator]
    assert isinstance(sampler, Sampler)
    assert adapt(sampler) is sampler
    x, eps, _ = _tensors(0)
    ab = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    got = sampler.step(eps, 900, x, num_steps=10)
    # DDIM eq. 12 with σ = 0: sqrt(ᾱ_s) x̂₀ + sqrt(1 − ᾱ_s) ε, s = 800
    exp = np.sqrt(ab[800]) * (x.numpy() - np.sqrt(1 - ab[900]) * eps.numpy()) / np.sqrt(ab[900]) + np.sqrt(1 - ab[800]) * eps.numpy()
    np.testing.assert_allclose(got.numpy(), exp, rtol=1e-12, atol=1e-12)


# ================================================================================== diffusers: conventions


def test_ddpm_default_conventions() -> None:
    c = adapt(DDPMScheduler()).conventions
    assert c == Conventions(family="ddpm", num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                            beta_end=0.02, variance_type="fixed_small", clip_sample=True, clip_sample_range=1.0,
                            prediction_type="epsilon", timestep_spacing="leading", steps_offset=0,
                            final_alpha_bar_is_one=True, thresholding=False, dynamic_thresholding_ratio=0.995,
                            sample_max_value=1.0, rescale_betas_zero_snr=False, supports_noise_injection=True)


def test_ddim_default_conventions() -> None:
    a = adapt(DDIMScheduler())
    assert isinstance(a, DiffusersDDIMAdapter)
    c = a.conventions
    assert (c.family, c.beta_schedule, c.variance_type, c.final_alpha_bar_is_one, c.clip_sample) == (
        "ddim", "linear", None, True, True)
    assert c.unsupported == () and c.use_clipped_model_output is False


def test_stable_diffusion_ddim_config() -> None:
    s = DDIMScheduler(**SD_CONFIG)
    a = DiffusersDDIMAdapter(s, use_clipped_model_output=True)
    c = a.conventions
    assert c.beta_schedule == "scaled_linear" and (c.beta_start, c.beta_end) == (0.00085, 0.012)
    assert c.final_alpha_bar_is_one is False and c.steps_offset == 1 and c.clip_sample is False
    assert c.use_clipped_model_output is True and c.unsupported == ()
    # leading with offset 1, T = 1000, N = 50: 981, 961, ..., 1
    np.testing.assert_array_equal(a.timesteps(50), np.arange(49, -1, -1) * 20 + 1)
    # betas(): the target's float32 table cast up exactly, as a copy
    b = a.betas()
    assert b.dtype == np.float64
    np.testing.assert_array_equal(b, s.betas.numpy().astype(np.float64))
    b[0] = 0.5
    assert float(s.betas[0]) != 0.5
    # ...and it is the scaled_linear schedule up to float32 rounding
    np.testing.assert_allclose(a.betas(), scaled_linear_betas(1000, 0.00085, 0.012), rtol=1e-6)
    np.testing.assert_array_equal(a.alphas_cumprod(), s.alphas_cumprod.numpy().astype(np.float64))


def test_schedule_names_are_mapped() -> None:
    assert adapt(DDPMScheduler(beta_schedule="squaredcos_cap_v2")).conventions.beta_schedule == "cosine"
    assert adapt(DDPMScheduler(beta_schedule="sigmoid")).conventions.beta_schedule == "sigmoid"
    c = adapt(DDIMScheduler(trained_betas=[0.1, 0.2, 0.3], num_train_timesteps=3)).conventions
    assert c.beta_schedule == "custom" and c.trained_betas == (0.1, 0.2, 0.3)
    c = adapt(DDPMScheduler(rescale_betas_zero_snr=True, timestep_spacing="trailing", steps_offset=1)).conventions
    assert c.rescale_betas_zero_snr and c.timestep_spacing == "trailing" and c.steps_offset == 1


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (DDPMScheduler, "beta_schedule", "laplace"),
        (DDPMScheduler, "prediction_type", "flow"),
        (DDPMScheduler, "variance_type", "fixed_medium"),
        (DDPMScheduler, "timestep_spacing", "karras"),
        (DDIMScheduler, "prediction_type", "flow"),
        (DDIMScheduler, "timestep_spacing", "karras"),
    ],
)
def test_unknown_values_land_in_unsupported(cls: type, field: str, value: str) -> None:
    c = adapt(cls(**{field: value})).conventions
    assert getattr(c, field) == value  # kept raw, never defaulted
    assert any(u.startswith(f"{field}={value!r}") for u in c.unsupported), c.unsupported


def test_subclass_parameter_lands_in_unsupported() -> None:
    from diffusers.configuration_utils import register_to_config

    class KnobDDPM(DDPMScheduler):
        @register_to_config
        def __init__(self, num_train_timesteps: int = 1000, extra_knob: float = 2.0):
            super().__init__(num_train_timesteps=num_train_timesteps)

    a = adapt(KnobDDPM(extra_knob=3.0))
    assert isinstance(a, DiffusersDDPMAdapter)
    assert a.conventions.unsupported == ("extra_knob=3.0: config field not interpreted by the adapter",)


# ================================================================================== diffusers: steps


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned", "learned_range"])
def test_ddpm_noise_injection_matches_posterior_float64(variance_type: str) -> None:
    s = DDPMScheduler(clip_sample=False, variance_type=variance_type)
    _float64_tables(s)
    a = DiffusersDDPMAdapter(s)
    x, eps, z = _tensors(1)
    pv = None
    if variance_type == "learned":
        pv = 0.01 * torch.rand(SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 1e-3
    elif variance_type == "learned_range":
        pv = torch.tanh(eps)
    got = a.step(eps, 900, x, num_steps=10, noise=z, predicted_variance=pv)
    exp, scale = mp_ddpm(a.alphas_cumprod(), 900, 800, x, eps, z, variance_type=variance_type, pv=pv)
    _scaled_close(got, exp, scale, 1e-12)
    # a different z moves the result: the injected noise is the one used
    other = a.step(eps, 900, x, num_steps=10, noise=-z, predicted_variance=pv)
    assert torch.max(torch.abs(other - got)) > 1e-3


def test_ddpm_noise_injection_with_stock_float32_tables() -> None:
    a = adapt(DDPMScheduler(clip_sample=False))
    x, eps, z = _tensors(3)
    got = a.step(eps, 900, x, num_steps=10, noise=z)
    exp, scale = mp_ddpm(a.alphas_cumprod(), 900, 800, x, eps, z)
    _scaled_close(got, exp, scale, 1e-5)  # diffusers forms its coefficients in float32


def test_ddpm_patch_is_restored_and_subclass_steps_are_patched() -> None:
    original = scheduling_ddpm.randn_tensor

    class Delegating(DDPMScheduler):  # step defined here, noise still drawn by the parent's step
        def step(self, model_output, timestep, sample, generator=None, return_dict=True):
            return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)

    class Failing(DDPMScheduler):
        def step(self, model_output, timestep, sample, generator=None, return_dict=True):
            super().step(model_output, timestep, sample, generator=generator)
            raise ArithmeticError("boom")

    class OwnNoise(DDPMScheduler):
        def step(self, model_output, timestep, sample, generator=None, return_dict=True):
            return DDPMSchedulerOutput(prev_sample=sample + torch.randn_like(sample))

    x, eps, z = _tensors(4)
    ref = adapt(DDPMScheduler()).step(eps, 900, x, num_steps=10, noise=z)
    assert torch.equal(adapt(Delegating()).step(eps, 900, x, num_steps=10, noise=z), ref)
    with pytest.raises(ArithmeticError):
        adapt(Failing()).step(eps, 900, x, num_steps=10, noise=z)
    assert scheduling_ddpm.randn_tensor is original
    with pytest.raises(RuntimeError, match="did not draw"):
        adapt(OwnNoise()).step(eps, 900, x, num_steps=10, noise=z)
    assert scheduling_ddpm.randn_tensor is original


def test_ddim_noise_injection_matches_eq12_float64() -> None:
    s = DDIMScheduler(**SD_CONFIG)
    _float64_tables(s)
    a = DiffusersDDIMAdapter(s)
    x, eps, z = _tensors(5)
    eta = 0.7
    got = a.step(eps, 501, x, num_steps=50, eta=eta, noise=z)  # 501 -> 481
    ab = a.alphas_cumprod()
    ab_t, ab_s = mp.mpf(float(ab[501])), mp.mpf(float(ab[481]))
    sigma = eta * mp.sqrt((1 - ab_s) / (1 - ab_t)) * mp.sqrt(1 - ab_t / ab_s)  # DDIM eq. 16
    d = mp.sqrt(1 - ab_s - sigma**2)
    exp, scale = [], []
    for xi, ei, zi in zip(x.flatten().tolist(), eps.flatten().tolist(), z.flatten().tolist()):
        x0 = (xi - mp.sqrt(1 - ab_t) * ei) / mp.sqrt(ab_t)
        exp.append(mp.sqrt(ab_s) * x0 + d * ei + sigma * zi)  # DDIM eq. 12
        scale.append(abs(mp.sqrt(ab_s) * x0) + abs(d * ei) + abs(sigma * zi))
    _scaled_close(got, exp, scale, 1e-12)


def test_inputs_are_not_mutated() -> None:
    x, eps, z = _tensors(6)
    pv = torch.tanh(eps)
    before = [v.clone() for v in (x, eps, z, pv)]
    DiffusersDDPMAdapter(DDPMScheduler(variance_type="learned_range")).step(eps, 900, x, num_steps=10, noise=z,
                                                                            predicted_variance=pv)
    DiffusersDDIMAdapter(DDIMScheduler(**SD_CONFIG)).step(eps, 981, x, num_steps=50, eta=1.0, noise=z)
    assert all(torch.equal(a, b) for a, b in zip(before, (x, eps, z, pv)))


def test_adapter_step_validation() -> None:
    a = adapt(DDPMScheduler())
    x, eps, z = _tensors(7)
    with pytest.raises(ValueError, match="t="):
        a.step(eps, 901, x, num_steps=10)
    with pytest.raises(ValueError, match="noise"):
        a.step(eps, 900, x, num_steps=10, noise=z[:1])
    with pytest.raises(ValueError, match="predicted_variance"):
        a.step(eps, 900, x, num_steps=10, predicted_variance=z)
    with pytest.raises(ValueError, match="predicted_variance"):
        adapt(DDPMScheduler(variance_type="learned_range")).step(eps, 900, x, num_steps=10)
    with pytest.raises(ValueError, match="num_steps"):
        a.timesteps(1001)
    with pytest.raises(ValueError, match="predicted_variance"):
        adapt(DDIMScheduler()).step(eps, 900, x, num_steps=10, predicted_variance=z)
    with pytest.raises(ValueError, match="scheduler"):
        DiffusersDDPMAdapter(DDIMScheduler())
    with pytest.raises(ValueError, match="scheduler"):
        DiffusersDDIMAdapter(DDPMScheduler())


# ================================================================================== FunctionSampler, adapt


def test_function_sampler_passes_every_argument() -> None:
    seen: dict[str, object] = {}

    def step_fn(model_output, t, x_t, *, num_steps, eta, noise, generator, predicted_variance):
        seen.update(t=t, num_steps=num_steps, eta=eta, noise=noise, generator=generator, pv=predicted_variance)
        return x_t - model_output

    betas = np.linspace(1e-4, 0.02, 1000)
    conv = Conventions(family="ddim", num_train_timesteps=1000, timestep_spacing="trailing")
    f = FunctionSampler(step_fn, betas, conv, name="mine")
    assert isinstance(f, Sampler) and adapt(f) is f and f.name == "mine"
    x, eps, z = _tensors(8)
    g = torch.Generator()
    out = f.step(eps, 999, x, num_steps=4, eta=0.5, noise=z, generator=g)
    assert torch.equal(out, x - eps)
    assert seen == dict(t=999, num_steps=4, eta=0.5, noise=z, generator=g, pv=None)
    np.testing.assert_array_equal(f.timesteps(4), [999, 749, 499, 249])  # round(1000 - 250k) - 1
    np.testing.assert_array_equal(f.alphas_cumprod(), alpha_bar(betas))
    custom = FunctionSampler(step_fn, betas, dataclasses.replace(conv, timestep_spacing="custom"),
                             timesteps_fn=lambda n: np.arange(n)[::-1] * 7, alphas_cumprod=np.cumprod(1 - betas))
    np.testing.assert_array_equal(custom.timesteps(3), [14, 7, 0])
    np.testing.assert_array_equal(custom.alphas_cumprod(), np.cumprod(1 - betas))


def test_function_sampler_validation() -> None:
    betas = np.linspace(1e-4, 0.02, 10)
    conv = Conventions(family="ddim", num_train_timesteps=10)
    ok = lambda m, t, x, **kw: x  # noqa: E731
    with pytest.raises(ValueError, match="step_fn"):
        FunctionSampler(3, betas, conv)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="betas"):
        FunctionSampler(ok, betas[:5], conv)
    with pytest.raises(ValueError, match="conventions"):
        FunctionSampler(ok, betas, {"family": "ddim"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timesteps_fn"):
        FunctionSampler(ok, betas, dataclasses.replace(conv, timestep_spacing="custom"))
    with pytest.raises(ValueError, match="alphas_cumprod"):
        FunctionSampler(ok, betas, conv, alphas_cumprod=np.ones(3))
    bad = FunctionSampler(lambda m, t, x, **kw: x[0], betas, conv)
    x, eps, _ = _tensors(9)
    with pytest.raises(TypeError, match="shape"):
        bad.step(eps, 9, x, num_steps=1)


def test_adapt_dispatch() -> None:
    port = make_reference_port()
    assert adapt(port) is port
    assert isinstance(adapt(DDPMScheduler), DiffusersDDPMAdapter)  # a class is a zero-argument factory
    made = adapt(lambda: DDIMScheduler(**SD_CONFIG))
    assert isinstance(made, DiffusersDDIMAdapter) and made.conventions.steps_offset == 1
    assert adapt(make_reference_port).conventions.family == "ddim"


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (3, "builtins.int"),
        (lambda n: n, "no arguments"),
        (lambda: 42, "returned int"),
        (diffusers.EulerDiscreteScheduler(), "supported diffusers classes: DDPMScheduler, DDIMScheduler"),
    ],
)
def test_adapt_errors(obj: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        adapt(obj)


def test_adapters_import_without_diffusers() -> None:
    code = (
        "import sys\n"
        "sys.modules['diffusers'] = None  # makes `import diffusers` raise ImportError\n"
        "from ddspec.conformance.adapters import adapt\n"
        "from ddspec.conformance.torch_port import make_reference_port\n"
        "p = make_reference_port()\n"
        "assert adapt(p) is p\n"
        "try:\n"
        "    adapt(3)\n"
        "except TypeError:\n"
        "    print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_docstring_example_passes_the_harness() -> None:
    """The protocol's own example conforms: ddspec check's quick profile finds nothing wrong with it."""
    from ddspec.conformance.checks import ALL_CHECKS
    from ddspec.conformance.context import CheckContext
    from ddspec.conformance.runner import run_checks

    code = re.search(r"\.\. code-block:: python\n\n(.*?)\n\n(?=\S)", protocol.__doc__ or "", re.S)
    assert code is not None
    namespace: dict[str, object] = {}
    exec(compile("\n".join(line[4:] for line in code.group(1).splitlines()), "<protocol example>", "exec"), namespace)
    sampler = namespace["MyDDIM"]()  # type: ignore[operator]
    report = run_checks(sampler, CheckContext(sampler, dtype="float64", profile="quick", seed=0), ALL_CHECKS,
                        target="protocol-example")
    assert report.exit_code() == 0, {r.name: (r.verdict.value, r.message[:200]) for r in report.checks
                                     if r.verdict.value != "pass"}


@pytest.mark.parametrize("base", ["DDIMScheduler", "DDPMScheduler"])
def test_set_timesteps_that_raised_raises_again(base: str) -> None:
    """A ``set_timesteps`` that raises after setting ``num_inference_steps`` must not leave the adapter
    believing N is set: the next call with the same N raises again (one root crash is reported at
    every call, never replaced by steps on a half-built scheduler)."""
    import diffusers

    from ddspec.conformance.adapters import adapt

    class HalfBuilt(getattr(diffusers, base)):  # type: ignore[misc, valid-type]
        def set_timesteps(self, num_inference_steps: int, device: object = None) -> None:
            self.num_inference_steps = num_inference_steps
            raise RuntimeError("half-built")

    sampler = adapt(HalfBuilt())
    for _ in range(2):
        with pytest.raises(RuntimeError, match="half-built"):
            sampler.timesteps(10)


# ----------------------------------------------------------------------------------------------------
# Old releases: config fields a release does not have are read with that release's behaviour
# ----------------------------------------------------------------------------------------------------

from ddspec.conformance.adapters import _diffusers_compat as compat  # noqa: E402

#: The ``__init__`` parameters of diffusers 0.14.0, read in the released sources
#: (``schedulers/scheduling_ddpm.py`` and ``scheduling_ddim.py`` of the 0.14.0 wheel).
DDPM_0_14_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                    "variance_type", "clip_sample", "prediction_type", "clip_sample_range")
DDIM_0_14_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                    "clip_sample", "set_alpha_to_one", "steps_offset", "prediction_type")
#: Fields added after 0.14 (DDPM: thresholding 0.15, timestep_spacing/steps_offset 0.18, rescale 0.25).
NEWER_DDPM_FIELDS = ("thresholding", "dynamic_thresholding_ratio", "sample_max_value", "timestep_spacing",
                     "steps_offset", "rescale_betas_zero_snr")


def _old_config(fields: tuple[str, ...], **values: object) -> dict[str, object]:
    base: dict[str, object] = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                   trained_betas=None, variance_type="fixed_small", clip_sample=True,
                                   prediction_type="epsilon", clip_sample_range=1.0, set_alpha_to_one=True,
                                   steps_offset=0)
    base.update(values)
    return {k: v for k, v in base.items() if k in fields or k in values}


def test_release_config_fills_missing_fields_with_the_release_behaviour() -> None:
    from ddspec.conformance.adapters.diffusers_ddpm import _DDPM_FIELDS

    rc = compat.read_release_config(_old_config(DDPM_0_14_FIELDS), DDPM_0_14_FIELDS, _DDPM_FIELDS,
                                    release="0.14.0", family="ddpm", class_name="DDPMScheduler")
    # 0.14.0's set_timesteps: (arange(0, N) * (T // N)).round()[::-1] -- leading, no offset; no
    # thresholding branch; no rescaling; clip_sample_range present (0.13 on) and read from the config
    assert rc["timestep_spacing"] == "leading" and rc["steps_offset"] == 0
    assert rc["thresholding"] is False and rc["rescale_betas_zero_snr"] is False
    assert rc["clip_sample_range"] == 1.0 and rc["clip_sample"] is True
    assert "diffusers 0.14.0 has no timestep_spacing: leading, as that release always did" in rc.notes
    assert any(n.startswith("diffusers 0.14.0 has no steps_offset: no offset") for n in rc.notes)
    assert any(n.startswith("diffusers 0.14.0 has no thresholding") for n in rc.notes)
    assert any(n.startswith("diffusers 0.14.0 has no rescale_betas_zero_snr") for n in rc.notes)
    assert not any("clip_sample_range" in n for n in rc.notes)  # 0.14 has it
    # the parameters of the absent thresholding feature need no note of their own
    assert not any("dynamic_thresholding_ratio" in n or "sample_max_value" in n for n in rc.notes)


def test_release_config_ddim_before_clip_sample_range() -> None:
    from ddspec.conformance.adapters.diffusers_ddim import _DDIM_FIELDS

    rc = compat.read_release_config(_old_config(DDIM_0_14_FIELDS, steps_offset=1, set_alpha_to_one=False),
                                    DDIM_0_14_FIELDS, _DDIM_FIELDS, release="0.14.0", family="ddim",
                                    class_name="DDIMScheduler")
    # DDIM 0.14 clamps to [-1, 1] (torch.clamp(x, -1, 1)) and honours steps_offset and set_alpha_to_one
    assert rc["clip_sample_range"] == 1.0 and rc["steps_offset"] == 1 and rc["set_alpha_to_one"] is False
    assert any(n.startswith("diffusers 0.14.0 has no clip_sample_range") for n in rc.notes)
    assert not any("steps_offset" in n or "set_alpha_to_one" in n for n in rc.notes)


def test_release_config_ignores_a_newer_field_the_release_does_not_take() -> None:
    """A newer scheduler_config.json loaded by an old release keeps e.g. timestep_spacing='trailing'
    as an unused entry; the release still spaces its timesteps as leading, so that is declared."""
    from ddspec.conformance.adapters.diffusers_ddpm import _DDPM_FIELDS

    cfg = _old_config(DDPM_0_14_FIELDS, timestep_spacing="trailing")
    rc = compat.read_release_config(cfg, DDPM_0_14_FIELDS, _DDPM_FIELDS, release="0.14.0", family="ddpm",
                                    class_name="DDPMScheduler")
    assert rc["timestep_spacing"] == "leading"
    assert any("timestep_spacing='trailing' is ignored by that release" in n for n in rc.notes)


def test_release_without_a_required_field_is_refused_naming_release_and_field() -> None:
    fields = tuple(f for f in DDPM_0_14_FIELDS if f != "prediction_type")
    with pytest.raises(compat.UnsupportedRelease, match=r"diffusers 0\.7\.0: DDPMScheduler has no config field "
                                                        r"prediction_type.*0\.10\.0"):
        compat.read_release_config(_old_config(fields), fields, ("prediction_type",), release="0.7.0",
                                   family="ddpm", class_name="DDPMScheduler")


def test_parse_release() -> None:
    assert compat.parse_release("0.14.0") == (0, 14, 0)
    assert compat.parse_release("0.32.0.dev0") == (0, 32, 0)
    with pytest.raises(ValueError, match="version='x'"):
        compat.parse_release("x")


def _fake_old_ddpm_class() -> type:
    """A DDPMScheduler subclass whose config lacks every field added after 0.14 (a fake of an old config)."""
    from diffusers.configuration_utils import FrozenDict

    class OldConfigDDPM(DDPMScheduler):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)
            self._internal_dict = FrozenDict({k: v for k, v in self._internal_dict.items()
                                              if k not in NEWER_DDPM_FIELDS})

    return OldConfigDDPM


def test_adapter_reads_a_config_without_the_new_fields() -> None:
    sampler = DiffusersDDPMAdapter(_fake_old_ddpm_class()(variance_type="fixed_large", clip_sample=False))
    conv = sampler.conventions
    assert (conv.timestep_spacing, conv.steps_offset, conv.thresholding, conv.rescale_betas_zero_snr) == (
        "leading", 0, False, False)
    assert (conv.variance_type, conv.clip_sample) == ("fixed_large", False)
    assert conv.unsupported == ()
    assert sampler.release == diffusers.__version__
    assert any("OldConfigDDPM config has no timestep_spacing" in n and "leading" in n for n in sampler.notes)
    # the declaration equals the one of a scheduler that states the old behaviour explicitly
    explicit = DiffusersDDPMAdapter(DDPMScheduler(variance_type="fixed_large", clip_sample=False,
                                                  timestep_spacing="leading", steps_offset=0))
    assert conv == explicit.conventions
    assert explicit.notes == ()


def test_adapter_refuses_a_config_without_a_required_field_and_the_loader_says_why() -> None:
    from diffusers.configuration_utils import FrozenDict

    from ddspec.conformance.loader import TargetLoadError, adapt_object

    s = DDPMScheduler()
    s._internal_dict = FrozenDict({k: v for k, v in s._internal_dict.items() if k != "prediction_type"})
    with pytest.raises(compat.UnsupportedRelease, match="config has no prediction_type"):
        DiffusersDDPMAdapter(s)
    with pytest.raises(TargetLoadError, match=r"UnsupportedRelease.*prediction_type"):
        adapt_object(s, "fake:old")


class _TorchRandnDDPM(DDPMScheduler):
    """Draws its noise with ``torch.randn`` in its own step, as diffusers 0.10/0.11 did (no randn_tensor)."""

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, generator: object = None,
             return_dict: bool = True) -> DDPMSchedulerOutput:
        z = torch.randn(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        return DDPMSchedulerOutput(prev_sample=sample + z)


def test_noise_injection_through_torch_randn() -> None:
    from ddspec.conformance.adapters.diffusers_ddpm import _noise_sites

    sites = _noise_sites(_TorchRandnDDPM)
    assert (globals(), "torch") in [(ns, kind) for ns, kind in sites if kind == "torch"]
    sampler = DiffusersDDPMAdapter(_TorchRandnDDPM())
    assert sampler.conventions.supports_noise_injection
    assert any("draws its noise with torch.randn" in n for n in sampler.notes)
    x, z, _ = _tensors(7)
    t = int(sampler.timesteps(10)[0])
    out = sampler.step(torch.zeros_like(x), t, x, num_steps=10, noise=z)
    assert torch.equal(out, x + z)  # exactly the injected z (x + z computed alike: one rounding each)
    assert globals()["torch"] is torch  # the module's name is restored after the call


def test_release_older_than_the_oldest_tested_gets_a_note() -> None:
    from ddspec.conformance.adapters.diffusers_ddpm import _DDPM_FIELDS

    fields = DDPM_0_14_FIELDS
    rc = compat.read_release_config(_old_config(fields), fields, _DDPM_FIELDS, release="0.9.0", family="ddpm",
                                    class_name="DDPMScheduler")
    assert "diffusers 0.9.0 is older than 0.10.0, the oldest release ddspec is tested against" in rc.notes
    newer = compat.read_release_config(_old_config(fields), fields, _DDPM_FIELDS, release="0.10.0", family="ddpm",
                                       class_name="DDPMScheduler")
    assert not any("older than" in n for n in newer.notes)
