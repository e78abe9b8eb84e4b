"""Subscriptions: Kafka consumer groups as verdict-filtered event subscriptions (docs/design.md
section 8)."""

from consumers.subscription import PostgresProjection, RetryPolicy, Subscription

__all__ = ["PostgresProjection", "RetryPolicy", "Subscription"]
