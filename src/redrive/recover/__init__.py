"""Recoverers: dead-letter publisher, skip, stop, or your own function."""

from redrive.recover.base import Call, Context, ListenerContext, Recoverer, Skip, Stop
from redrive.recover.breaker import DEFAULT_IN_A_ROW, CircuitBreaker, default_recoverer
from redrive.recover.dead_letter import DeadLetter

__all__ = [
    "DEFAULT_IN_A_ROW",
    "Call",
    "CircuitBreaker",
    "Context",
    "DeadLetter",
    "ListenerContext",
    "Recoverer",
    "Skip",
    "Stop",
    "default_recoverer",
]
