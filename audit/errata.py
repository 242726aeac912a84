r"""The errata register: common formulation mistakes in DDPM/DDIM write-ups, and the audit of the source documents.

:data:`ERRATA` is declarative: each :class:`Erratum` names the quantity it concerns, its wrong form
and the correct form (sympy, over the vocabulary of :mod:`ddspec.audit.formula`), the source of the
correct form and where it was found. The checker names an erratum when a formula equals its wrong
form at every evaluation point (:func:`ddspec.audit.check_formula`).

:data:`SEED_FORMULAS` lists every formula stated (in text that survives) by the five documents in
``shared/seeds/`` for the checkable quantities, with its location (file:line) and the verdict the
audit expects; :data:`SEED_NOTES` records what the checker cannot express (notation slips in
derivations). :func:`render_markdown` renders both into ``docs/errata.md``, running the checker for
the register's verdicts (the seed verdicts are asserted by tests/audit/test_seeds.py); ``python -m ddspec.audit`` prints it (a test fails when the file is
stale).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Erratum", "ERRATA", "SeedFormula", "SEED_FORMULAS", "SEED_DOCUMENTS", "SEED_NOTES", "render_markdown"]

_H = "Ho et al. 2020"
_D = "Song, Meng & Ermon 2021 (DDIM)"
_N = "Nichol & Dhariwal 2021"


@dataclass(frozen=True)
class Erratum:
    """One registered mistake: the quantity, its wrong and correct forms, the source, and where it was seen."""

    name: str
    title: str
    quantity: str
    wrong: str
    correct: str
    source: str
    consequence: str
    found_in: tuple[str, ...] = ()
    etas: tuple[float, ...] = (0.0, 0.5, 1.0)


_LIST: tuple[Erratum, ...] = (
    Erratum("sigma_squared_eta_beta_tilde", "σ² = η·β̃ instead of σ = η·√β̃", "ddim_sigma",
            "sqrt(eta*beta_tilde_t)", "eta*sqrt(beta_tilde_t)", f"{_D}, eq. 16",
            "agrees only at η ∈ {0, 1}; at η = 0.5 the noise std is √0.5 ≈ 0.71·√β̃ instead of 0.5·√β̃",
            ("002:25",)),
    Erratum("beta_for_beta_tilde_in_ddim_sigma", "β_t where β̃_t belongs, in DDIM's σ(η)", "ddim_sigma",
            "eta*sqrt(beta_t)", "eta*sqrt(beta_tilde_t)", f"{_D}, eq. 16",
            "σ² exceeds 1 − ᾱ_prev at the first step, so √(1 − ᾱ_prev − σ²) is not real there"),
    Erratum("beta_for_beta_tilde", "β_t where β̃_t belongs, as the posterior variance", "posterior_variance",
            "beta_t", "(1 - alpha_bar_prev)/(1 - alpha_bar_t)*beta_t", f"{_H}, eq. 7",
            "β_t is the forward variance (a valid *reverse* variance choice, §3.2) but not q(x_{t−1}|x_t, x₀)'s"),
    Erratum("reciprocal_posterior_variance_at_first_step", "β̃_t = 1/(α_t/β_t + 1/(1 − ᾱ_{t−1})) used at t = 1",
            "posterior_variance", "1/(alpha_t/beta_t + 1/(1 - alpha_bar_prev))",
            "(1 - alpha_bar_prev)/(1 - alpha_bar_t)*beta_t", f"{_H}, eq. 7",
            "equal for t ≥ 2, but 1/(1 − ᾱ_0) = 1/0 at t = 1, where β̃_1 = 0 is only its limit", ("002:15",)),
    Erratum("beta_under_root_in_posterior_coef1", "√(ᾱ_{t−1}β_t) instead of √ᾱ_{t−1}·β_t in μ̃_t", "posterior_mean_coef1",
            "sqrt(alpha_bar_prev*beta_t)/(1 - alpha_bar_t)", "sqrt(alpha_bar_prev)*beta_t/(1 - alpha_bar_t)",
            f"{_H}, eq. 7", "the x₀ coefficient is 1/√β_t too large (~100× at β = 1e-4)", ("002:15",)),
    Erratum("alpha_bar_product_to_T", "ᾱ_t = ∏_{i=1}^{T} α_i (upper limit T instead of t)", "alpha_bar",
            "Product(alpha(k), (k, 1, T))", "Product(alpha(k), (k, 1, t))", f"{_H}, §2 (ᾱ_t := ∏_{{s=1}}^t α_s)",
            "ᾱ_t would be the same (ᾱ_T) at every t", ("002:11",)),
    Erratum("cos_instead_of_cos_squared", "cos instead of cos² in the cosine schedule's f(t)", "cosine_alpha_bar",
            "cos((t/T + s)/(1 + s)*pi/2)/cos(s/(1 + s)*pi/2)", "cos((t/T + s)/(1 + s)*pi/2)**2/cos(s/(1 + s)*pi/2)**2",
            f"{_N}, eq. 17", "ᾱ(t) is the square root of the intended one: far too much signal at every t", ("002:22",)),
    Erratum("next_ratio_in_cosine_clip", "1 − ᾱ_t/ᾱ_{t+1} inside the cosine clip", "cosine_beta",
            "Min(1 - alpha_bar_t/alpha_bar(t + 1), max_beta)", "Min(1 - alpha_bar_t/alpha_bar_prev, max_beta)",
            f"{_N}, §3.2 (below eq. 17)", "β_t < 0 at every t (ᾱ decreases), and ᾱ_{T+1} does not exist"),
    Erratum("alpha_for_alpha_bar_in_cosine_clip", "1 − ᾱ_t/α_{t−1} (α for ᾱ) inside the cosine clip", "cosine_beta",
            "Min(1 - alpha_bar_t/alpha(t - 1), max_beta)", "Min(1 - alpha_bar_t/alpha_bar_prev, max_beta)",
            f"{_N}, §3.2 (below eq. 17)", "β_t ≈ 1 − ᾱ_t: the schedule is wrong from the second step", ("002:22",)),
    Erratum("sigma_fourth_in_lt_weight", "‖Σ_θ‖² (σ⁴) instead of σ² in the L_t weight", "lt_weight",
            "beta_t**2/(2*sigma_t**4*alpha_t*(1 - alpha_bar_t))", "beta_t**2/(2*sigma_t**2*alpha_t*(1 - alpha_bar_t))",
            f"{_H}, eq. 12 (from eq. 8: 1/(2σ_t²))", "the weight is 1/σ_t² too large (×10⁴ at σ² = 1e-4)", ("002:18",)),
    Erratum("sign_slip_under_root", "√(1 − ᾱ_prev + σ²) instead of √(1 − ᾱ_prev − σ²)", "ddim_direction",
            "sqrt(1 - alpha_bar_prev + sigma_t**2)", "sqrt(1 - alpha_bar_prev - sigma_t**2)", f"{_D}, eq. 12",
            "the step's total variance exceeds 1 − ᾱ_prev: the marginals drift (agrees only at η = 0)"),
    Erratum("consecutive_alpha_bar_in_strided_step", "ᾱ_{t−1} where ᾱ_{τ_{i−1}} belongs (x̂₀ coefficient of an accelerated step)",
            "ddim_x0_coefficient", "sqrt(alpha_bar(t - 1))", "sqrt(alpha_bar_prev)", f"{_D}, §4.2 (eq. 12 on τ)",
            "agrees on the full schedule, wrong on every strided step: the sample lands at the wrong noise level",
            ("002:25",)),
    Erratum("consecutive_alpha_bar_in_strided_direction", "ᾱ_{t−1} where ᾱ_{τ_{i−1}} belongs (direction of an accelerated step)",
            "ddim_direction", "sqrt(1 - alpha_bar(t - 1) - sigma_t**2)", "sqrt(1 - alpha_bar_prev - sigma_t**2)",
            f"{_D}, §4.2 (eq. 12 on τ)", "agrees on the full schedule, wrong on every strided step", ("002:25",)),
    Erratum("missing_sqrt_in_q_sigma_denominator", "(x_t − √ᾱ_t x₀)/(1 − ᾱ_t) instead of /√(1 − ᾱ_t) in q_σ's mean",
            "ddim_xt_coefficient", "sqrt(1 - alpha_bar_prev - sigma_t**2)/(1 - alpha_bar_t)",
            "sqrt(1 - alpha_bar_prev - sigma_t**2)/sqrt(1 - alpha_bar_t)", f"{_D}, eq. 7",
            "the predicted noise is not unit-variance: x_t's coefficient is 1/√(1 − ᾱ_t) too large", ("002:25",)),
    Erratum("sign_slip_in_x0_from_eps", "√(ᾱ_t − 1) instead of √(1 − ᾱ_t) in x̂₀ from ε", "x0_from_eps_coef_eps",
            "-sqrt(alpha_bar_t - 1)/sqrt(alpha_bar_t)", "-sqrt(1 - alpha_bar_t)/sqrt(alpha_bar_t)", f"{_H}, eq. 4 (eq. 15)",
            "the square root of a negative number: not real at any t", ("003:39", "003:50")),
    Erratum("subscript_slip_alpha_bar_t_minus_1", "√(ᾱ_t − 1) for √ᾱ_{t−1} (subscript slip) in a DDIM step",
            "ddim_x0_coefficient", "sqrt(alpha_bar_t - 1)", "sqrt(alpha_bar_prev)", f"{_D}, eq. 12",
            "the square root of a negative number: not real at any t", ("003:39", "003:60")),
    Erratum("v_swapped_coefficients", "v = √(1 − ᾱ)ε − √ᾱ x₀ (coefficients swapped)", "v_coef_eps",
            "sqrt(1 - alpha_bar_t)", "sqrt(alpha_bar_t)", "Salimans & Ho 2022, §4",
            "v's ε and x₀ roles swap: x̂₀ from v is wrong except where ᾱ = 1/2"),
    Erratum("noise_stops_one_step_early", "a DDPM loop that adds no noise at the last two steps", "ddpm_noise_std_fixed_large",
            "Piecewise((sqrt(beta_t), idx > 1), (0, True))", "Piecewise((sqrt(beta_t), idx > 0), (0, True))",
            f"{_H}, Algorithm 2 (z = 0 only at t = 1)",
            "Algorithm 2's 1-based rule `t > 1` applied to a 0-based loop variable: the step at index 1 "
            "(papers' t = 2) loses its noise", ("003:64",)),
    Erratum("noise_one_step_late", "a DDPM loop that adds noise at the last step too", "ddpm_noise_std_fixed_large",
            "sqrt(beta_t)", "Piecewise((sqrt(beta_t), idx > 0), (0, True))", f"{_H}, Algorithm 2 (z = 0 at t = 1)",
            "the returned x₀ carries noise of std √β_1 (with σ² = β̃ this mistake is invisible: β̃_1 = 0)"),
    Erratum("noise_omitted", "a DDPM step x_{t−1} = μ_θ without the σ_t z term", "ddpm_noise_std",
            "0", "sqrt(beta_tilde_t)", f"{_H}, Algorithm 2 line 4",
            "the sampler is deterministic: not DDPM's ancestral sampler", ("003:27",)),
)

#: The register, by name.
ERRATA: dict[str, Erratum] = {e.name: e for e in _LIST}


@dataclass(frozen=True)
class SeedFormula:
    """A formula stated in a source document: location (file:line), as written, and its transcription."""

    location: str
    as_written: str
    quantity: str
    expr: str
    expect: str | None  # the erratum the audit finds, or None (correct)
    etas: tuple[float, ...] = (0.0, 0.5, 1.0)
    note: str = ""


#: The five source documents (shared/seeds/), by the prefix used in locations.
SEED_DOCUMENTS: dict[str, str] = {
    "000": "000_ce8b59adca728f00.txt — From DDPM to DDIM (IV), prediction noise and post-processing (en)",
    "001": "001_9eb82e66769e0848.txt — DDPM blog post (en); its equations were images and did not survive",
    "002": "002_fe9fb139e29a341f.txt — Detailed explanation of diffusion model (en, translated)",
    "003": "003_550d8d24aab5e371.txt — DDIM notes with diffusers code (zh)",
    "004": "004_fb0cac4b2fc968bd.txt — DDIM paper summary (en); its equations were images and did not survive",
}

SEED_FORMULAS: tuple[SeedFormula, ...] = (
    SeedFormula("000:14", "ᾱ_t = ᾱ_{t−1} α_t", "alpha_bar", "alpha_bar_prev*alpha_t", None),
    SeedFormula("000:30", "z ~ N(0, I) if t > 1 else z = 0, t = T, …, 1 (σ² = β_t)", "ddpm_noise_std_fixed_large",
                "Piecewise((sqrt(beta_t), t > 1), (0, True))", None),
    SeedFormula("000:30", "z ~ N(0, I) if t > 1 else z = 0, t = T, …, 1 (σ² = β̃_t)", "ddpm_noise_std",
                "Piecewise((sqrt(beta_tilde_t), t > 1), (0, True))", None),
    SeedFormula("001:41", "σ_t² = β̃_t", "ddpm_noise_std", "sqrt(beta_tilde_t)", None),
    SeedFormula("001:41,48", "σ_t² = β_t, no noise at the end of sampling (t = 1)", "ddpm_noise_std_fixed_large",
                "Piecewise((sqrt(beta_t), t > 1), (0, True))", None),
    SeedFormula("002:11", "ᾱ_t = ∏_{i=1}^{T} α_i", "alpha_bar", "Product(alpha(k), (k, 1, T))", "alpha_bar_product_to_T"),
    SeedFormula("002:11", "x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) z", "forward_mean_coef", "sqrt(alpha_bar_t)", None),
    SeedFormula("002:11", "x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) z", "forward_std", "sqrt(1 - alpha_bar_t)", None),
    SeedFormula("002:15", "β̃_t = 1/(α_t/β_t + 1/(1 − ᾱ_{t−1}))", "posterior_variance",
                "1/(alpha_t/beta_t + 1/(1 - alpha_bar_prev))", "reciprocal_posterior_variance_at_first_step",
                note="correct for t ≥ 2 (the derivation's setting)"),
    SeedFormula("002:15", "β̃_t = 1/((α_t − ᾱ_t + β_t)/(β_t(1 − ᾱ_{t−1})))", "posterior_variance",
                "1/((alpha_t - alpha_bar_t + beta_t)/(beta_t*(1 - alpha_bar_prev)))", None),
    SeedFormula("002:15", "β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t)·β_t", "posterior_variance",
                "(1 - alpha_bar_prev)/(1 - alpha_bar_t)*beta_t", None),
    SeedFormula("002:15", "μ̃_t = √α_t(1 − ᾱ_{t−1})/(1 − ᾱ_t) x_t + …", "posterior_mean_coef2",
                "sqrt(alpha_t)*(1 - alpha_bar_prev)/(1 - alpha_bar_t)", None),
    SeedFormula("002:15", "μ̃_t = … + √(ᾱ_{t−1}β_t)/(1 − ᾱ_t) x₀", "posterior_mean_coef1",
                "sqrt(alpha_bar_prev*beta_t)/(1 - alpha_bar_t)", "beta_under_root_in_posterior_coef1"),
    SeedFormula("002:15", "μ̃_t = … + √ᾱ_{t−1}β_t/(1 − ᾱ_t) · x₀(x_t, z_t) (ε-form substitution)", "posterior_mean_coef1",
                "sqrt(alpha_bar_prev)*beta_t/(1 - alpha_bar_t)", None),
    SeedFormula("002:15", "μ̃_t = 1/√α_t (x_t − β_t/√(1 − ᾱ_t) z_t)", "ddpm_mean_coef_xt", "1/sqrt(alpha_t)", None),
    SeedFormula("002:15", "μ̃_t = 1/√α_t (x_t − β_t/√(1 − ᾱ_t) z_t)", "ddpm_mean_coef_eps",
                "-beta_t/(sqrt(alpha_t)*sqrt(1 - alpha_bar_t))", None),
    SeedFormula("002:17", "μ̃_t = 1/√α_t (x − β_t/√(1 − ᾱ_t) z_t)", "ddpm_mean_coef_eps",
                "-beta_t/(sqrt(alpha_t)*sqrt(1 - alpha_bar_t))", None),
    SeedFormula("002:18", "μ_θ = 1/√α_t (x_t − β_t/√(1 − ᾱ_t) z_θ)", "ddpm_mean_coef_eps",
                "-(1/sqrt(alpha_t))*beta_t/sqrt(1 - alpha_bar_t)", None),
    SeedFormula("002:18", "L_t weight β_t²/(2α_t(1 − ᾱ_t)‖Σ_θ‖₂²), Σ_θ = σ_t² I", "lt_weight",
                "beta_t**2/(2*alpha_t*(1 - alpha_bar_t)*(sigma_t**2)**2)", "sigma_fourth_in_lt_weight"),
    SeedFormula("002:22", "β_t = clip(1 − ᾱ_t/α_{t−1}, 0.999)", "cosine_beta",
                "Min(1 - alpha_bar_t/alpha(t - 1), 0.999)", "alpha_for_alpha_bar_in_cosine_clip"),
    SeedFormula("002:22", "ᾱ_t = f(t)/f(0), f(t) = cos((t/T + s)/(1 + s)·π/2)", "cosine_alpha_bar",
                "cos((t/T + s)/(1 + s)*pi/2)/cos((0/T + s)/(1 + s)*pi/2)", "cos_instead_of_cos_squared"),
    SeedFormula("002:25", "x_{t−1} = √ᾱ_{t−1}x₀ + √(1 − ᾱ_{t−1} − σ_t²)(x_t − √ᾱ_t x₀)/√(1 − ᾱ_t) + σ_t z (direction)",
                "ddim_direction", "sqrt(1 - alpha_bar_prev - sigma_t**2)", None),
    SeedFormula("002:25", "… (x_t − √ᾱ_t x₀)/√(1 − ᾱ_t) (third line)", "ddim_xt_coefficient",
                "sqrt(1 - alpha_bar_prev - sigma_t**2)/sqrt(1 - alpha_bar_t)", None),
    SeedFormula("002:25", "q_σ(x_{t−1}|x_t, x₀) = N(…(x_t − √ᾱ_t x₀)/(1 − ᾱ_t), σ_t² I)", "ddim_xt_coefficient",
                "sqrt(1 - alpha_bar_prev - sigma_t**2)/(1 - alpha_bar_t)", "missing_sqrt_in_q_sigma_denominator"),
    SeedFormula("002:25", "β̃_t = σ_t² = (1 − ᾱ_{t−1})/(1 − ᾱ_t)·β_t (the DDPM case, η = 1)", "ddim_sigma",
                "sqrt((1 - alpha_bar_prev)/(1 - alpha_bar_t)*beta_t)", None, (1.0,)),
    SeedFormula("002:25", "σ_t² = η·β̃_t", "ddim_sigma", "sqrt(eta*beta_tilde_t)", "sigma_squared_eta_beta_tilde"),
    SeedFormula("002:25", "q_{σ,τ}(x_{τ_{i−1}}|x_{τ_i}, x₀) = N(√ᾱ_{t−1} x₀ + …)", "ddim_x0_coefficient",
                "sqrt(alpha_bar(t - 1))", "consecutive_alpha_bar_in_strided_step"),
    SeedFormula("002:25", "q_{σ,τ}(…) = N(… + √(1 − ᾱ_{t−1} − σ_t²)(x_{τ_i} − √ᾱ_t x₀)/√(1 − ᾱ_t), …)", "ddim_direction",
                "sqrt(1 - alpha_bar(t - 1) - sigma_t**2)", "consecutive_alpha_bar_in_strided_direction"),
    SeedFormula("003:27", "x_{t−1} = 1/√α_t (x_t − β_t/√(1 − ᾱ_t)·ε_θ)", "ddpm_mean_coef_xt", "1/sqrt(alpha_t)", None),
    SeedFormula("003:27", "x_{t−1} = 1/√α_t (x_t − β_t/√(1 − ᾱ_t)·ε_θ)", "ddpm_mean_coef_eps",
                "-beta_t/sqrt(1 - alpha_bar_t)/sqrt(alpha_t)", None),
    SeedFormula("003:27", "x_{t−1} = 1/√α_t (x_t − β_t/√(1 − ᾱ_t)·ε_θ) (no σ_t z term)", "ddpm_noise_std", "0",
                "noise_omitted", note="the document's code (003:64) does add noise"),
    SeedFormula("003:32", "ᾱ_t = ∏_{s=1}^{t} α_s", "alpha_bar", "Product(alpha(k), (k, 1, t))", None),
    SeedFormula("003:39", "x_{t−1} = √(ᾱ_t − 1)·(…) + …", "ddim_x0_coefficient", "sqrt(alpha_bar_t - 1)",
                "subscript_slip_alpha_bar_t_minus_1"),
    SeedFormula("003:39", "pred_x0 = (x_t − √(ᾱ_t − 1)·ε_θ)/√ᾱ_t (coefficient of x_t)", "x0_from_eps_coef_xt",
                "1/sqrt(alpha_bar_t)", None),
    SeedFormula("003:50", "pred_x0 = (x_t − √(ᾱ_t − 1)·ε_θ)/√ᾱ_t (coefficient of ε_θ)", "x0_from_eps_coef_eps",
                "-sqrt(alpha_bar_t - 1)/sqrt(alpha_bar_t)", "sign_slip_in_x0_from_eps"),
    SeedFormula("003:54", "direction_point = √(1 − ᾱ_{t−1})·ε_θ (deterministic DDIM, η = 0)", "ddim_direction",
                "sqrt(1 - alpha_bar_prev)", None, (0.0,), "correct for η = 0 only, the case the document describes"),
    SeedFormula("003:60", "x_{t−1} = √(ᾱ_t − 1)·pred_x0 + direction_point", "ddim_x0_coefficient",
                "sqrt(alpha_bar_t - 1)", "subscript_slip_alpha_bar_t_minus_1"),
    SeedFormula("003:64", "(sample − (1 − α_t)/√(1 − ᾱ_t)·residual)/√α_t", "ddpm_mean_coef_eps",
                "-(1 - alpha_t)/sqrt(1 - alpha_bar_t)/sqrt(alpha_t)", None),
    SeedFormula("003:64", "(sample − …)/√α_t", "ddpm_mean_coef_xt", "1/sqrt(alpha_t)", None),
    SeedFormula("003:64", "if t > 1: sample += √(1 − α_t)·noise (t from scheduler.timesteps: 999, …, 0)",
                "ddpm_noise_std_fixed_large", "Piecewise((sqrt(1 - alpha_t), idx > 1), (0, True))",
                "noise_stops_one_step_early", note="t is 0-based here, so `t > 1` skips the step at index 1"),
    SeedFormula("003:65", "pred_x0 = (sample − √(1 − ᾱ_t)·residual)/√ᾱ_t", "x0_from_eps_coef_eps",
                "-sqrt(1 - alpha_bar_t)/sqrt(alpha_bar_t)", None),
    SeedFormula("003:65", "pred_x0 = (sample − …)/√ᾱ_t", "x0_from_eps_coef_xt", "1/sqrt(alpha_bar_t)", None),
    SeedFormula("003:65", "√ᾱ_prev·pred_x0, ᾱ_prev = ᾱ[timesteps[i+1]] (1 after the last)", "ddim_x0_coefficient",
                "sqrt(alpha_bar_prev)", None),
    SeedFormula("003:65", "direction_xt = √(1 − ᾱ_prev)·residual (η = 0)", "ddim_direction", "sqrt(1 - alpha_bar_prev)",
                None, (0.0,)),
    SeedFormula("004:19", "σ_t = 0 for all t (DDIM)", "ddim_sigma", "0", None, (0.0,)),
)

#: Statements the checker does not express as a quantity (notation slips, algorithms, constants), with location.
SEED_NOTES: tuple[tuple[str, str], ...] = (
    ("000:35,47", "Post-processing (x/2 + 0.5).clamp(0, 1), then ×255 and round: diffusers' convention "
                  "(reference: postprocess), correct."),
    ("002:13", "Langevin dynamics x_t = x_{t−1} + (ε/2)∇ log p(x_{t−1}) + √ε z_t: correct (Welling & Teh 2011; "
               "Song & Ermon 2019, eq. 4)."),
    ("002:22", "Linear schedule β_1 = 10⁻⁴ to β_T = 0.02: Ho et al. 2020, §4, correct (schedules.linear_betas defaults)."),
    ("002:10", "q(x_t|x_{t−1}) = N(√(1 − β) x_{t−1}, β_t I): the subscript of β under the root is missing (β_t)."),
    ("002:11", "Merging N(0, σ₁²I) and N(0, σ₂²I) gives N(0, (σ₁², σ₂²)I): should be (σ₁² + σ₂²)I. "
               "The merged std √((1 − α_t) + α_t(1 − α_{t−1})) = √(1 − α_tα_{t−1}) that follows is correct."),
    ("002:15", "In the expanded exponent, ᾱ_{t−1}x₀ should be ᾱ_{t−1}x₀² (inside the constant C, so harmless); "
               "√α_t is typeset \\sqrt{\\alpha}_t twice."),
    ("002:18", "The second line of L_t has ‖…‖ without the square and 1 − ᾱ without its subscript t."),
    ("002:23", "Σ_θ = exp(v log β_t + (1 − v) log β̃_t) is Nichol & Dhariwal 2021, eq. 15 (correct; "
               "reference: variances.reverse_variance('learned_range'))."),
    ("002:25", "√(1 − ᾱ_{t−1} − σ_t² z_t) has z_t inside the root (a typesetting slip; the next line is right); "
               "q_{σ,τ}(x_{τ_{i−1}}|x_{τ_t}, x₀) should condition on x_{τ_i}; the section opens with q_σ(x_t|x_t, x₀) for q_σ(x_{t−1}|x_t, x₀)."),
    ("002:23", "L_hybrid = L_simple + λ L_vlb with λ = 0.001: Nichol & Dhariwal 2021, §3.1, correct "
               "(likelihood.l_hybrid default)."),
    ("003:34", "t = 999, …, 0 is the 0-based index (docs/conventions.md); the formulas above it are 1-based."),
    ("003:45", "DDIM timesteps 980, 960, …, 20, 0 for 50 steps: diffusers' `leading` spacing, correct "
               "(timesteps.leading_timesteps; tests/audit/test_seeds.py)."),
    ("001", "Every equation was an image: only the text claims survive (σ² = β_t or β̃_t, line 41: both valid, Ho et al. §3.2)."),
    ("004", "Every equation was an image: only 'σ_t = 0 for all t' (line 19) survives, checked above."),
)


_SYM = {True: "identical to the reference", False: "different", None: "undecided"}


def _fmt(x: float) -> str:
    return "∞ (the reference is 0 there, or the form is not real or undefined)" if x == float("inf") else f"{x:.2g}"


def render_markdown() -> str:
    """docs/errata.md, with every verdict computed by the checker now."""
    from .checker import check_formula
    from .formula import _DOCS, parse_formula
    from .symbolic import symbolic_verdict
    from .quantities import DEFAULT_ETAS, DEFAULT_SCHEDULES, QUANTITIES

    out: list[str] = []
    w = out.append
    w("# Errata register and formula checker")
    w("")
    w("<!-- generated by `python -m ddspec.audit > docs/errata.md`; tests/audit/test_errata.py fails when stale -->")
    w("")
    w("`ddspec formula \"EXPR\" --quantity NAME` (or `ddspec.audit.check_formula(expr_or_fn, quantity)`) compares a")
    w("formula with the reference quantity at every index of the standard schedules "
      f"({', '.join(DEFAULT_SCHEDULES)}; T = 1000), for DDIM quantities also at the strided (t, t_prev) pairs of 50- and")
    w(f"10-step `leading` subsequences and η ∈ {{{', '.join(f'{e:g}' for e in DEFAULT_ETAS)}}}, and symbolically where sympy")
    w("can decide. It reports the worst relative error, where (0-based index t), the tolerance, and the registered")
    w("erratum the formula equals, if any. Exit status of the CLI: 0 matches, 1 differs, 2 bad expression or quantity.")
    w("")
    w("**Tolerance.** A string formula is evaluated exactly (mpmath, 60 digits) from the exact float64 β, so the only")
    w("error left is the reference's: |F − R| ≤ k·2⁻⁵²·|R| with k the reference's ULP bound for the quantity (below).")
    w("A Python callable runs in float64 and is allowed 32·2⁻⁵²·(1 + κ) more, κ its condition number in its inputs.")
    w("")
    w("## Vocabulary")
    w("")
    w("| symbol | meaning |")
    w("|---|---|")
    for k, v in _DOCS.items():
        w(f"| `{k}` | {v} |")
    w("| `beta(k)`, `alpha(k)`, `alpha_bar(k)` | the schedule at the 1-based index k (ᾱ(0) = 1): `alpha_bar(t - 1)` is the literal ᾱ_{t−1} |")
    w("")
    w("Also: numbers, `pi`, `sqrt`, `exp`, `log`, `cos`, `sin`, `tan`, `Abs`, `Min`, `Max`, `Piecewise`, `Product`, `Sum`.")
    w("For `cosine_alpha_bar`/`cosine_beta`, ᾱ symbols are the closed form f(t)/f(0) (Nichol & Dhariwal eq. 17).")
    w("")
    w("## Quantities")
    w("")
    w("| quantity | reference form | source | reference function | bound (ULP) |")
    w("|---|---|---|---|---|")
    for q in QUANTITIES.values():
        w(f"| `{q.name}` | `{q.reference_form}` | {q.source} | `{q.reference_functions}` | {q.ulp_bound:g}: {q.ulp_note} |")
    w("")
    w("## The register")
    w("")
    w("Each entry's wrong form is identified by name and its correct form matches "
      "(`tests/audit/test_errata.py::test_erratum_identified`, `::test_erratum_correct_form_matches`).")
    w("")
    for e in ERRATA.values():
        v = check_formula(e.wrong, e.quantity, etas=e.etas, symbolic=False)
        ok = check_formula(e.correct, e.quantity, etas=e.etas, symbolic=False)
        w(f"### `{e.name}`: {e.title}")
        w("")
        w(f"- quantity: `{e.quantity}`")
        w(f"- wrong: `{e.wrong}`")
        w(f"- correct: `{e.correct}` — {e.source}")
        w(f"- consequence: {e.consequence}")
        where = v.where.describe() if v.where is not None else "-"
        w(f"- checker on the wrong form: {'matches' if v.matches else 'differs'} at {v.points_failed} of "
          f"{v.points_checked} points, worst relative error {_fmt(v.worst_relative_error)} ({where}); "
          f"identified as `{v.erratum}`")
        w(f"- checker on the correct form: {'matches' if ok.matches else 'DIFFERS'} ({ok.points_checked} points)")
        sym, note = symbolic_verdict(parse_formula(e.wrong), QUANTITIES[e.quantity])
        w(f"- symbolic verdict on the wrong form: {_SYM[sym]} ({note})")
        if e.found_in:
            w(f"- found in the source documents: {', '.join(e.found_in)}")
        w("")
    w("## Audit of the source documents")
    w("")
    w("Every formula the five documents in `shared/seeds/` state in surviving text for a checkable quantity, with")
    w("its location (file prefix:line), transcribed into the vocabulary and run through the checker")
    w("(`tests/audit/test_seeds.py` asserts each verdict below).")
    w("")
    for k, v in SEED_DOCUMENTS.items():
        w(f"- `{k}`: {v}")
    w("")
    w("| location | as written | quantity | transcription | verdict |")
    w("|---|---|---|---|---|")
    for s in SEED_FORMULAS:
        # the verdict the audit records; tests/audit/test_seeds.py runs the checker on each and asserts it
        verdict = "correct" if s.expect is None else f"**erratum `{s.expect}`**"
        if s.etas != DEFAULT_ETAS:
            verdict += f" (η ∈ {{{', '.join(f'{e:g}' for e in s.etas)}}})"
        if s.note:
            verdict += f"; {s.note}"
        w(f"| {s.location} | {s.as_written.replace('|', '∣')} | `{s.quantity}` | `{s.expr}` | {verdict} |")
    w("")
    w("### Errata found, by location")
    w("")
    found = sorted((loc, e.name, e.title) for e in ERRATA.values() for loc in e.found_in)
    for loc, name, title in found:
        w(f"- {loc}: `{name}` — {title}")
    w("")
    w("### Other statements (not a checked quantity)")
    w("")
    for loc, text in sorted(SEED_NOTES):
        w(f"- {loc}: {text}")
    w("")
    return "\n".join(out)

