"""Subscriptions: Kafka consumer groups as verdict-filtered event subscriptions (docs/design.md
section 8)."""

from consumers.retrypolicy import RetryPolicy
from consumers.subscription import PostgresProjection, Subscription

__all__ = ["PostgresProjection", "RetryPolicy", "Subscription"]
