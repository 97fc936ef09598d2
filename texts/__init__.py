"""Texts (SMS): templates, their encoding and length, rendering, and inbound classification."""
