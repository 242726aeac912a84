"""Tests of ddspec.audit: the formula checker, the errata register, the audit of the source documents."""
