"""Recoverers: dead-letter publisher, skip, stop, or your own function."""

from redrive.recover.base import Call, Context, Recoverer, Skip, Stop
from redrive.recover.breaker import CircuitBreaker
from redrive.recover.dead_letter import DeadLetter

__all__ = ["Call", "CircuitBreaker", "Context", "DeadLetter", "Recoverer", "Skip", "Stop"]
