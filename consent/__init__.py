"""Consent registry, revocations and the internal do-not-call list."""
