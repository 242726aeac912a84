r"""False alarms of the harness: every correct configuration must conform, across seeds and dtypes.

Each configuration of :data:`~tests.quality.zoo.CORRECT_CONFIGS` (diffusers' ``DDPMScheduler()`` and
``DDIMScheduler()`` defaults, a Stable-Diffusion-style DDIM, DDIM with v-prediction, DDPM with
``fixed_large``, ``fixed_small_log`` and ``learned_range``, cosine DDIM, DDIM with dynamic
thresholding, and the bundled reference port as DDIM and DDPM) runs through the
whole harness (``ALL_CHECKS``, profile ``quick``) in float32 and float64 with seeds
:data:`SEEDS`; a wider seed sweep is marked ``slow``. Every verdict must be ``pass``,
``acceptable`` (with its consequence stated) or ``skipped`` (with its reason); ``unsupported`` only
where :data:`DOCUMENTED_UNSUPPORTED` says so (nowhere today: the run-output law of a learned DDPM
variance is checked, with the harness supplying the model's variance output).

The diffusers configurations of :data:`~tests.quality.zoo.KNOWN_DISCREPANCIES` deviate from the
papers' equations (``docs/diffusers.md`` has a section per bug). They are expected failures, strict,
naming the upstream bug: the test fails with :class:`KnownDiscrepancy` only when every failing
check is one the bug explains (``Config.fails``) and at least one fails; any other failure is a
plain ``AssertionError`` and is reported as a failure, not an expected one.
"""

from __future__ import annotations

import fnmatch
import functools

import pytest

from ddspec.conformance.adapters import adapt
from ddspec.conformance.checks import ALL_CHECKS
from ddspec.conformance.context import CheckContext
from ddspec.conformance.results import CheckResult, Report, Verdict
from ddspec.conformance.runner import run_checks

from .zoo import CORRECT_CONFIGS, KNOWN_DISCREPANCIES, Config

#: Seeds of the default run (each configuration, each dtype).
SEEDS = (0, 1)
#: Seeds of the opt-in wider sweep (``--run-slow``).
SLOW_SEEDS = tuple(range(2, 12))

#: ``{config name: {check-name pattern: why unsupported}}`` — the only places ``unsupported`` is allowed.
DOCUMENTED_UNSUPPORTED: dict[str, dict[str, str]] = {}

_CONFIGS = {c.name: c for c in CORRECT_CONFIGS + KNOWN_DISCREPANCIES}


class KnownDiscrepancy(AssertionError):
    """The configuration fails exactly where its documented upstream bug says it does."""


@functools.lru_cache(maxsize=None)
def _report(name: str, dtype: str, seed: int) -> Report:
    config = _CONFIGS[name]
    sampler = adapt(config.factory())
    ctx = CheckContext(sampler, dtype=dtype, profile="quick", seed=seed, steps=config.steps)
    return run_checks(sampler, ctx, ALL_CHECKS)


def _problems(config: Config, report: Report) -> list[CheckResult]:
    """Results that a conforming target may not have."""
    allowed_unsupported = DOCUMENTED_UNSUPPORTED.get(config.name, {})
    bad = []
    for r in report.checks:
        if r.verdict is Verdict.PASS:
            continue
        if r.verdict is Verdict.ACCEPTABLE and r.consequence:
            continue
        if r.verdict is Verdict.SKIPPED and r.message:
            continue
        if r.verdict is Verdict.UNSUPPORTED and any(fnmatch.fnmatchcase(r.name, p) for p in allowed_unsupported):
            continue
        if r.verdict is Verdict.FAIL and any(fnmatch.fnmatchcase(r.name, p) for p, _why in config.allow):
            continue  # a known deviation declared explicitly, with the upstream bug as its reason
        bad.append(r)
    return bad


def _describe(results: list[CheckResult]) -> str:
    return "\n".join(
        f"  {r.name}: {r.verdict.value} (observed {r.observed}, tolerance {r.tolerance}) {r.message[:300]}"
        for r in results
    )


def assert_conforms(config: Config, dtype: str, seed: int) -> None:
    report = _report(config.name, dtype, seed)
    crashed = [r for r in report.checks if r.family == "harness" or r.message.startswith("the check function raised")]
    assert not crashed, f"{config.name} {dtype} seed {seed}: a check crashed:\n{_describe(crashed)}"
    bad = _problems(config, report)
    if not bad:
        return
    where = f"{config.name} ({config.description}) in {dtype}, seed {seed}"
    explained = config.fails and all(
        r.verdict is Verdict.FAIL and any(fnmatch.fnmatchcase(r.name, p) for p in config.fails) for r in bad
    )
    if explained:
        raise KnownDiscrepancy(f"{where}: {config.discrepancy}\n{_describe(bad)}")
    raise AssertionError(f"{where}: not conforming:\n{_describe(bad)}")


def _cases(configs: tuple[Config, ...], seeds: tuple[int, ...]) -> list:
    out = []
    for c in configs:
        for dtype in c.dtypes:
            for seed in seeds:
                m = []
                if c.discrepancy is not None:
                    m.append(pytest.mark.xfail(reason=c.discrepancy, raises=KnownDiscrepancy, strict=True))
                out.append(pytest.param(c.name, dtype, seed, id=f"{c.name}-{dtype}-seed{seed}", marks=m))
    return out


@pytest.mark.parametrize(("name", "dtype", "seed"), _cases(CORRECT_CONFIGS, SEEDS))
def test_correct_configuration_conforms(name: str, dtype: str, seed: int) -> None:
    assert_conforms(_CONFIGS[name], dtype, seed)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dtype", "seed"), _cases(CORRECT_CONFIGS, SLOW_SEEDS))
def test_correct_configuration_conforms_wide_seed_sweep(name: str, dtype: str, seed: int) -> None:
    assert_conforms(_CONFIGS[name], dtype, seed)


@pytest.mark.parametrize(("name", "dtype", "seed"), _cases(KNOWN_DISCREPANCIES, (0,)))
def test_known_diffusers_discrepancy(name: str, dtype: str, seed: int) -> None:
    assert_conforms(_CONFIGS[name], dtype, seed)


def test_stable_diffusion_variant_is_acceptable_with_its_consequence() -> None:
    r"""set_alpha_to_one=False is recognised as the ᾱ_0 variant: acceptable, with the residual noise std
    :math:`\sqrt{1-\bar\alpha_0}` = √β₁ = √0.00085 stated (β₁ = beta_start for scaled_linear)."""
    report = _report("diffusers_ddim_stable_diffusion", "float32", SEEDS[0])
    final = [r for r in report.checks if r.name == "oracle.final_alpha_bar"]
    assert len(final) == 1 and final[0].verdict is Verdict.ACCEPTABLE
    expected_std = 0.00085**0.5  # 1 - ᾱ_0 = β_1 = beta_start (scaled_linear: (√β_start)² at index 0)
    assert f"{expected_std:.4g}" in final[0].consequence


def test_defaults_pass_outright() -> None:
    """diffusers' DDIM defaults and the port declare no variant: nothing is merely acceptable there."""
    for name in ("diffusers_ddim_default", "port_ddim", "port_ddpm"):
        for dtype in ("float32", "float64"):
            report = _report(name, dtype, SEEDS[0])
            assert all(r.verdict is Verdict.PASS for r in report.checks), (
                name, dtype, {r.name: r.verdict.value for r in report.checks if r.verdict is not Verdict.PASS})
