r"""Faithful stand-ins for libraries that cannot be installed beside this CPU torch build.

Each module re-states one library's public interface and numerics from its documented semantics and
its released source, read for reference only (no code is copied): the same class, attribute and
argument names, the same step formulas, timestep rules, dtypes and known quirks. The adapters in
``ddspec.conformance.adapters`` are tested against them.

* :mod:`.improved_diffusion`: openai/improved-diffusion and openai/guided-diffusion
  (``GaussianDiffusion``, ``SpacedDiffusion``, ``space_timesteps``).
* :mod:`.compvis`: CompVis latent-diffusion / stable-diffusion (``DDPM``, ``LatentDiffusion``,
  ``DDIMSampler``, ``make_ddim_timesteps``).
* the stand-ins of issue 9 part B (denoising-diffusion-pytorch, ermongroup/ddim) live beside these and
  are described in their own module docstrings.
"""
