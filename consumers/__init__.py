"""Subscriptions: Kafka consumer groups as verdict-filtered event subscriptions (DESIGN.md s. 8)."""

from consumers.subscription import PostgresProjection, RetryPolicy, Subscription

__all__ = ["PostgresProjection", "RetryPolicy", "Subscription"]
