"""What the loop asks of a dispatcher, and what every dispatcher is given.

A dispatcher decides *who* runs a record (the loop thread one at a time, a batch handler,
lanes of workers); the ``FailureHandler`` decides what happens when it fails; the
``Committer`` turns final outcomes into commits; the ``Pauser`` keeps what waits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redrive.consumer.committer import Committer
from redrive.consumer.failures import FailureHandler, Hold
from redrive.consumer.offsets import Runs
from redrive.consumer.pauser import Parked, Pauser
from redrive.consumer.spec import ListenerSpec
from redrive.errors import BatchFailed, Defer, ListenerStopped
from redrive.events import Delivered, EventBus
from redrive.message import Message, TopicPartition


@dataclass(frozen=True, slots=True)
class Parts:
    """The loop's collaborators, shared by its dispatcher."""

    spec: ListenerSpec
    engine: FailureHandler
    committer: Committer
    pauser: Pauser
    bus: EventBus
    stopping: Callable[[], bool]


class Dispatcher(Protocol):
    def before_poll(self, timeout: float, max_records: int) -> tuple[float, int]:
        """The timeout and record count of the next poll."""

    def dispatch(self, msgs: Sequence[Message], runs: Runs | None = None) -> None:
        """Hand over the records of one poll; `runs`: their offsets per partition."""

    def resumed(self, parked: Parked) -> None:
        """A parked entry is due: hand its records over again."""

    def settle(self) -> None:
        """Take in outcomes reported by other threads (loop thread)."""

    def idle(self, wait: float = 0.0) -> bool:
        """Nothing handed over is still running or unsettled (waiting up to `wait` seconds
        for workers to report, where there are workers)."""

    def revoke(self, partitions: Sequence[TopicPartition], timeout: float) -> None:
        """Partitions are taken away: drop their queued work, wait (bounded) for running."""

    def close(self, timeout: float) -> None: ...


class OnLoopThread:
    """What the dispatchers that run the handler on the loop thread share: handing one
    record over and taking its outcome to the failure engine, and having no workers."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self._call, self._release = run_sync(parts.spec.handler)

    def hand_over(self, msg: Message, arg: Any, isolate: int | None = None) -> Hold | None:
        """Call the handler with `arg` (`msg`, or a batch of it alone); None: it succeeded.
        With `isolate` (a batch's attempts are used up) a failure recovers it at once."""
        parts = self.parts
        if parts.bus.records:
            parts.bus.emit(Delivered(parts.spec.name, ((msg.tp, msg.offset, msg.attempt),), (msg,)))
        failure = call_handler(self._call, arg)
        if failure is None:
            parts.engine.succeeded(msg)
            return None
        return self.outcome(msg, failure, isolate)

    def outcome(self, msg: Message, exc: Exception, isolate: int | None = None) -> Hold:
        """What becomes of `msg`, whose handler raised `exc`."""
        engine = self.parts.engine
        if isinstance(exc, Defer):  # "not yet" is no failure: wait, counting no attempt
            return engine.wait(msg, exc.delay)
        if isolate is None:
            return engine.failed(msg, cause_of(exc))
        return engine.give_up(msg, cause_of(exc), isolate)

    def before_poll(self, timeout: float, max_records: int) -> tuple[float, int]:
        return timeout, max_records

    def settle(self) -> None:
        pass

    def idle(self, wait: float = 0.0) -> bool:
        return True

    def revoke(self, partitions: Sequence[TopicPartition], timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        self._release()


def call_handler(call: Callable[[Any], Any], arg: Any) -> Exception | None:
    """Call the handler with `arg`: None when it returned, otherwise what it raised (a
    ``Defer``, a ``BatchFailed``, a failure); ``ListenerStopped`` is raised on."""
    try:
        call(arg)
    except ListenerStopped:
        raise
    except Exception as exc:
        return exc
    return None


def cause_of(failure: BaseException) -> BaseException:
    """The failure a handler reported: a ``BatchFailed``'s cause, or the failure itself."""
    return (failure.__cause__ or failure) if isinstance(failure, BatchFailed) else failure


def park(parts: Parts, tp: TopicPartition, delay: float, held: list[Message]) -> None:
    """Pause `tp` for `delay` and rewind it: to the first held record (seek retries), or
    past the held records, which are handed over again when due (in-place retries)."""
    if parts.spec.retry.mode == "in_place":
        parts.pauser.park(tp, delay, tp, seek=held[-1].offset + 1, held=held)
    else:
        parts.pauser.park(tp, delay, tp, seek=held[0].offset)


def run_sync(handler: Callable[[Any], Any]) -> tuple[Callable[[Any], Any], Callable[[], None]]:
    """A plain function for `handler` (an ``async def`` one runs on an event loop of its
    own), and a function that releases what it needed."""
    import asyncio
    import inspect

    if not inspect.iscoroutinefunction(handler):
        return handler, lambda: None
    aloop = asyncio.new_event_loop()

    def call(arg: Any) -> Any:
        return aloop.run_until_complete(handler(arg))

    return call, aloop.close
