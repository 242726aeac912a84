"""ddspec.conformance: checks any torch DDPM/DDIM sampler against ddspec.reference."""
