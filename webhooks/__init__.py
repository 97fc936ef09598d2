"""Webhooks: subscriptions, signed deliveries, the delivery worker (docs/integration.md)."""
