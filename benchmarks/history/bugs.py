r"""The historical-bug benchmark: fixed DDPMScheduler/DDIMScheduler bugs of diffusers, one row each.

Each :class:`Bug` names the diffusers issue or pull request, the last release that has the bug and
the first that does not, the configuration that exposes it (a factory of
:mod:`benchmarks.history.targets`, the step counts and dtype), the checks that must fail on the
before-release (``fnmatch`` patterns; each must match at least one failing check), and the failures
allowed on the after-release (none, unless a row says which other, still unfixed, bug explains it).

``buggy_lines`` cites the before-release's own source (``diffusers/schedulers/<file>`` of the wheel
on PyPI, line numbers of that file), read there, not recalled: the runner
(:mod:`benchmarks.history.run_history`) and ``docs/history.md`` show the table, and
``tests/conformance/test_diffusers_history.py`` checks its shape.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Bug", "BUGS", "LOAD_RELEASES"]


@dataclass(frozen=True)
class Bug:
    r"""One fixed diffusers bug.

    Attributes:
        key: short id (also the column header of the runner's table).
        ref: the diffusers issue(s) / pull request(s), e.g. ``"#2076"``.
        title: what was wrong, in one line.
        last_buggy: the last release with the bug.
        first_fixed: the first release without it.
        target: the factory in :mod:`benchmarks.history.targets`.
        config: the configuration, as a user would write it.
        buggy_lines: ``file:line: code`` of the before-release (one entry per line cited).
        must_fail: patterns of the checks that must fail on ``last_buggy``.
        steps: the ``--steps`` of the run (None: the profile's).
        dtype: the ``--dtype`` of the run.
        may_fail_after: ``(pattern, reason)`` failures allowed on ``first_fixed`` (another bug of the table).
    """

    key: str
    ref: str
    title: str
    last_buggy: str
    first_fixed: str
    target: str
    config: str
    buggy_lines: tuple[str, ...]
    must_fail: tuple[str, ...]
    steps: tuple[int, ...] | None = None
    dtype: str = "float32"
    may_fail_after: tuple[tuple[str, str], ...] = ()


_STILL_2076 = (
    ("oracle.*", "diffusers #2076 (row prev-t-minus-1) is still in 0.12"),
    ("single_step.*", "diffusers #2076 (row prev-t-minus-1) is still in 0.12"),
    ("distribution.*", "diffusers #2076 (row prev-t-minus-1) is still in 0.12"),
)

BUGS: tuple[Bug, ...] = (
    Bug(
        key="n-plus-one",
        ref="#1835",
        title="DDPM set_timesteps returns more than N timesteps when N does not divide T",
        last_buggy="0.11.1", first_fixed="0.12.0",
        target="ddpm_default", config="DDPMScheduler()",
        buggy_lines=(
            "scheduling_ddpm.py:189-191: timesteps = np.arange(0, self.config.num_train_timesteps, "
            "self.config.num_train_timesteps // self.num_inference_steps)[::-1].copy()",
        ),
        must_fail=("timesteps.sequence.N=3", "timesteps.sequence.N=7"),
        may_fail_after=_STILL_2076,
    ),
    Bug(
        key="prev-t-minus-1",
        ref="#2076",
        title="DDPM step uses alphas_cumprod[t - 1] (and beta_t) as the previous step for every step count",
        last_buggy="0.12.1", first_fixed="0.13.0",
        target="ddpm_default", config="DDPMScheduler()",
        buggy_lines=(
            "scheduling_ddpm.py:281: alpha_prod_t_prev = self.alphas_cumprod[t - 1] if t > 0 else self.one",
            "scheduling_ddpm.py:305: pred_original_sample_coeff = (alpha_prod_t_prev ** (0.5) * self.betas[t]) / beta_prod_t",
            "scheduling_ddpm.py:306: current_sample_coeff = self.alphas[t] ** (0.5) * beta_prod_t_prev / beta_prod_t",
            "scheduling_ddpm.py:203: alpha_prod_t_prev = self.alphas_cumprod[t - 1] if t > 0 else self.one",
        ),
        must_fail=("oracle.point_mass.variance_type=fixed_small", "single_step.variance_type=fixed_small", "distribution.step_moments.*"),
    ),
    Bug(
        key="learned-range-log",
        ref="#2090",
        title="learned_range interpolates the variances, not their logs (no log/exp)",
        last_buggy="0.12.1", first_fixed="0.13.0",
        target="ddpm_learned_range_t50",
        config="DDPMScheduler(variance_type='learned_range', num_train_timesteps=50), N = 50 (beta' = beta: #3006 cannot show)",
        buggy_lines=(
            "scheduling_ddpm.py:228: min_log = variance",
            "scheduling_ddpm.py:229: max_log = self.betas[t]",
            "scheduling_ddpm.py:231: variance = frac * max_log + (1 - frac) * min_log",
        ),
        must_fail=("single_step.variance_type=learned_range",),
        steps=(50,),
    ),
    Bug(
        key="learned-range-beta",
        ref="#3006",
        title="learned_range uses beta_t instead of the respaced beta' = 1 - abar_t/abar_prev",
        last_buggy="0.14.0", first_fixed="0.15.0",
        target="ddpm_learned_range", config="DDPMScheduler(variance_type='learned_range')",
        buggy_lines=(
            "scheduling_ddpm.py:223: max_log = torch.log(self.betas[t])",
        ),
        must_fail=("single_step.variance_type=learned_range",),
    ),
    Bug(
        key="add-noise-fp16-ddpm",
        ref="#3005",
        title="add_noise in float16 overwrites the stored float32 alphas_cumprod (DDPM)",
        last_buggy="0.14.0", first_fixed="0.15.0",
        target="ddpm_after_float16_add_noise",
        config="DDPMScheduler(), then add_noise(float16 tensors)",
        buggy_lines=(
            "scheduling_ddpm.py:330: self.alphas_cumprod = self.alphas_cumprod.to(device=original_samples.device, "
            "dtype=original_samples.dtype)",
        ),
        must_fail=("schedule.*",),
    ),
    Bug(
        key="add-noise-fp16-ddim",
        ref="#3005",
        title="add_noise in float16 overwrites the stored float32 alphas_cumprod (DDIM)",
        last_buggy="0.14.0", first_fixed="0.15.0",
        target="ddim_after_float16_add_noise",
        config="DDIMScheduler(), then add_noise(float16 tensors)",
        buggy_lines=(
            "scheduling_ddim.py:336: self.alphas_cumprod = self.alphas_cumprod.to(device=original_samples.device, "
            "dtype=original_samples.dtype)",
        ),
        must_fail=("schedule.*",),
    ),
    Bug(
        key="ddim-sample-as-eps",
        ref="#1486, #2094",
        title="DDIM prediction_type='sample' uses the model output (x0) as epsilon in the direction term",
        last_buggy="0.14.0", first_fixed="0.15.0",
        target="ddim_sample_prediction", config="DDIMScheduler(prediction_type='sample')",
        buggy_lines=(
            "scheduling_ddim.py:277-278: elif self.config.prediction_type == \"sample\": pred_original_sample = model_output",
            "scheduling_ddim.py:303: pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * model_output",
        ),
        must_fail=("single_step.*",),
    ),
    Bug(
        key="ddpm-prev-trailing",
        ref="#9261, #9384",
        title="DDPM previous timestep is t - T//N under trailing spacing",
        last_buggy="0.31.0", first_fixed="0.32.0",
        target="ddpm_trailing", config="DDPMScheduler(timestep_spacing='trailing')",
        buggy_lines=(
            "scheduling_ddpm.py:551: if self.custom_timesteps:",
            "scheduling_ddpm.py:561: prev_t = timestep - self.config.num_train_timesteps // num_inference_steps",
        ),
        must_fail=("single_step.*",),
    ),
    Bug(
        key="ddpm-prev-linspace",
        ref="#9261, #9384",
        title="DDPM previous timestep is t - T//N under linspace spacing",
        last_buggy="0.31.0", first_fixed="0.32.0",
        target="ddpm_linspace", config="DDPMScheduler(timestep_spacing='linspace')",
        buggy_lines=(
            "scheduling_ddpm.py:551: if self.custom_timesteps:",
            "scheduling_ddpm.py:561: prev_t = timestep - self.config.num_train_timesteps // num_inference_steps",
        ),
        must_fail=("single_step.*",),
    ),
)


#: The releases whose default DDPMScheduler and DDIMScheduler the runner loads with ``--load`` (the
#: latest patch of every minor release from 0.10 on, and 0.10.0): none may be a load error (exit 2).
LOAD_RELEASES: tuple[str, ...] = (
    "0.10.0", "0.10.2", "0.11.1", "0.12.1", "0.13.1", "0.14.0", "0.15.1", "0.16.1", "0.17.1", "0.18.2",
    "0.19.3", "0.20.2", "0.21.4", "0.22.3", "0.23.1", "0.24.0", "0.25.1", "0.26.3", "0.27.2", "0.28.2",
    "0.29.2", "0.30.3", "0.31.0", "0.32.2", "0.33.1", "0.34.0", "0.35.2", "0.36.0", "0.37.1", "0.38.0",
    "0.39.0", "0.40.0", "0.41.0", "0.42.1",
)
