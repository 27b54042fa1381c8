"""redrive: batch Kafka consumption with failure behaviour you can rely on and see."""

from redrive.app import App
from redrive.consumer.commit import Commit
from redrive.errors import (
    BatchFailed,
    BrokerError,
    ClientError,
    ConfigError,
    Defer,
    DeserializationError,
    HandlingInterrupted,
    KafkaUnavailable,
    ListenerStopped,
    ProducerFenced,
    RecoveryFailed,
    RedriveError,
    TransactionAborted,
)
from redrive.events import EventBus
from redrive.message import Message, TopicPartition
from redrive.outputs import Output
from redrive.recover import Call, CircuitBreaker, DeadLetter, Skip, Stop
from redrive.retry.backoff import BackOff
from redrive.retry.classify import Classifier
from redrive.retry.policy import Retry
from redrive.topics import RetryTopics

__version__ = "0.1.0"

__all__ = [
    "App",
    "BackOff",
    "BatchFailed",
    "BrokerError",
    "Call",
    "CircuitBreaker",
    "Classifier",
    "ClientError",
    "Commit",
    "ConfigError",
    "DeadLetter",
    "Defer",
    "DeserializationError",
    "EventBus",
    "HandlingInterrupted",
    "KafkaUnavailable",
    "ListenerStopped",
    "Message",
    "Output",
    "ProducerFenced",
    "RecoveryFailed",
    "RedriveError",
    "Retry",
    "RetryTopics",
    "Skip",
    "Stop",
    "TopicPartition",
    "TransactionAborted",
]
