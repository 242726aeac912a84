"""Adapters: one file per foreign library, all behind ddspec.conformance.protocol.Sampler."""
