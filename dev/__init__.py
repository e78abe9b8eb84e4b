"""The local stack: a real Kafka broker (KRaft, jars from Maven Central) and a PostgreSQL cluster
of the project's own, started by ``kafkastore dev`` and by the test fixtures (docs/design.md
section 10).
"""
