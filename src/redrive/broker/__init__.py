"""The local Apache Kafka broker used by tests, the demo and the lab."""

from redrive.broker.daemon import BrokerStatus, broker_down, broker_status, broker_up
from redrive.broker.local import KAFKA_VERSION, LocalKafka, kafka_for_run, resolve_jars

__all__ = [
    "KAFKA_VERSION",
    "BrokerStatus",
    "LocalKafka",
    "broker_down",
    "broker_status",
    "broker_up",
    "kafka_for_run",
    "resolve_jars",
]
