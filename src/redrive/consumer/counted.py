"""The failure engine's half for records whose deliveries the broker counts (share
groups, S1): the same classification, retry policy and recoverers as ``FailureHandler``
(``consumer/failures.py``), answering accept, release or reject instead of a delay."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

from redrive.consumer.failures import run_recoverer
from redrive.consumer.spec import ListenerSpec
from redrive.errors import (
    DeliveryLimitReached,
    ListenerStopped,
)
from redrive.events import (
    EventBus,
    Failed,
    RecoveryRetrying,
    Succeeded,
)
from redrive.message import Message
from redrive.recover.breaker import CircuitBreaker

log = logging.getLogger("redrive.loop")


Verdict = Literal["accept", "release", "reject"]
"""What a share listener tells the broker about a record (see ``CountedFailures``)."""


class CountedFailures:
    """The failure engine for records whose deliveries the broker counts (share groups, S1).

    A share group's broker keeps each record's delivery count (``msg.attempt``), so this
    half of the engine keeps no state: it classifies the failure (F5) and asks the
    listener's ``Retry`` whether attempts are left, exactly as ``FailureHandler`` does,
    and runs the same recoverer. What differs is the answer: not a delay, but what to tell
    the broker.

    - ``gate``: an undecodable record is recovered (F4); a record delivered at the group's
      ``limit`` is recovered without being handed over (``DeliveryLimitReached``): failures
      are recovered one delivery earlier, so only an interrupted delivery gets there, and a
      last delivery interrupted again would be archived by the broker without a dead letter.
    - ``failed``: fatal, or the last handling attempt (``min(retry attempts, limit - 1)``):
      recover, then "reject"; otherwise "release" (the broker delivers it again at once,
      to any member: back-off delays cannot be waited out, see the README).
    - ``recover``: "reject" only once the recoverer returned (the dead letter is confirmed,
      D3). A recoverer that raises is tried again in place after the ``Retry.recovery``
      back-off, while the record's acquisition lock lasts (``expires()``, on ``clock``):
      then "release" (it is delivered again, and its dead letter may be written twice when
      a write the broker took was reported as failed). A stop ends the retries with
      "release" too, except for a record at the limit: the broker archives a released
      record at the limit, so its dead letter is tried again whatever the stop says until
      its lock expires, and past the lock until it is written unless the listener is
      stopping (then the broker has archived it without a dead letter: logged as an error).
      A circuit breaker that trips on a record at the limit does not keep it from its
      dead letter (``CircuitBreaker.recoverer`` writes it), then the listener stops.

    ``recover_lock`` serializes recoveries when several members share one recoverer. The
    first failure a recoverer is told (the dead letter's first-failure header) is the time
    of recovery: the broker counts deliveries but keeps no time of the first failure.
    """

    def __init__(
        self,
        spec: ListenerSpec,
        bus: EventBus,
        limit: int,
        sleep: Callable[[float], bool],
        wall_clock: Callable[[], float] = time.time,
        *,
        stopping: Callable[[], bool] = lambda: False,
        expires: Callable[[], float] = lambda: math.inf,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] = time.sleep,
        recover_lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self.spec = spec
        self.retry = spec.retry
        self.bus = bus
        self.limit = limit
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.stopping = stopping
        self.expires = expires
        self.clock = clock
        self.pause = pause
        self.recover_lock = recover_lock or nullcontext()
        self.handled = 0
        self.stopped: ListenerStopped | None = None  # raised by the loop after this poll

    def gate(self, msg: Message) -> Verdict | None:
        if msg.error is not None:  # undecodable: never reaches the handler (F4)
            return self.failed(msg, msg.error)
        if msg.attempt >= self.limit:
            return self.recover(msg, DeliveryLimitReached(msg.attempt, self.limit), 1)
        return None

    def succeeded(self, msg: Message) -> Verdict:
        self.handled += 1
        if self.bus:
            self.bus.emit(Succeeded(self.spec.name, msg.tp, msg.offset))
        return "accept"

    def failed(self, msg: Message, exc: BaseException) -> Verdict:
        retry = self.retry
        fatal = retry.classifier.is_fatal(exc)
        if self.bus:
            self.bus.emit(Failed(self.spec.name, msg.tp, msg.offset, msg.attempt,
                                 type(exc).__name__, str(exc), fatal))  # fmt: skip
        # elapsed-time limits cannot apply: the first failure's time is not carried along
        last = fatal or msg.attempt >= self.limit - 1
        if last or retry.next_delay(exc, msg.attempt, 0.0) is None:
            return self.recover(msg, exc)
        log.info("%s: %s[%d]@%d failed (delivery %d: %s: %s); released for redelivery",
                 self.spec.name, msg.topic, msg.partition, msg.offset, msg.attempt,
                 type(exc).__name__, exc)  # fmt: skip
        return "release"

    def recover(self, msg: Message, exc: BaseException, interruptions: int = 0) -> Verdict:
        spec = self.spec
        at_limit = msg.attempt >= self.limit
        recoverer = spec.recoverer
        tries = 0
        while True:
            try:
                with self.recover_lock:
                    run_recoverer(spec, self.bus, msg, exc, msg.attempt, self.wall_clock(),
                                  interruptions, recoverer=recoverer)  # fmt: skip
                return "reject"
            except ListenerStopped:
                if not at_limit or not isinstance(recoverer, CircuitBreaker):
                    if at_limit:
                        log.error("%s: %s[%d]@%d is at the delivery limit and was not "
                                  "recovered (the recoverer stopped the listener): the broker "
                                  "archives it without a dead letter", spec.name, msg.topic,
                                  msg.partition, msg.offset)  # fmt: skip
                    raise
                # Released, the broker would archive it without a dead letter: write it past
                # the breaker (which logged why it tripped); the loop stops after this poll.
                self.stopped = ListenerStopped(
                    f"listener {spec.name!r} stopped by the dead-letter circuit breaker "
                    f"(see above); {msg.topic}[{msg.partition}]@{msg.offset}, at the delivery "
                    "limit, was dead-lettered all the same (released, the broker would have "
                    "archived it)"
                )
                recoverer = recoverer.recoverer
                continue
            except Exception as rexc:  # not final: never rejected without it (D3)
                tries += 1
                if (verdict := self._retry_wait(msg, rexc, tries, at_limit)) is not None:
                    return verdict

    def _retry_wait(self, msg: Message, rexc: Exception, tries: int,
                    at_limit: bool) -> Verdict | None:  # fmt: skip
        """Wait before recovery is tried again (None), or give up with a verdict."""
        spec = self.spec
        delay = spec.retry.recovery.delay_forever(tries)
        left = self.expires() - self.clock()
        where = f"{msg.topic}[{msg.partition}]@{msg.offset}"
        if self.bus:
            self.bus.emit(RecoveryRetrying(spec.name, msg.tp, msg.offset, str(rexc)))
        if not at_limit:
            if left <= 0:
                log.error("%s: recovering %s failed and its lock expired: released for "
                          "redelivery: %s", spec.name, where, rexc)  # fmt: skip
                return "release"
            log.error("%s: recovering %s failed, retrying in %.1fs: %s",
                      spec.name, where, min(delay, left), rexc)  # fmt: skip
            return None if self.sleep(min(delay, left)) else "release"
        if left <= 0 and self.stopping():
            log.error("%s: recovering %s failed and the listener stops past its lock: it is "
                      "at the delivery limit, so the broker archives it without a dead "
                      "letter: %s", spec.name, where, rexc)  # fmt: skip
            return "release"  # ignored by the broker past the lock
        wait = min(delay, left) if left > 0 else delay
        log.error("%s: recovering %s (at the delivery limit) failed, retrying in %.1fs%s: %s",
                  spec.name, where, wait, "" if left > 0 else " (past its lock)", rexc)  # fmt: skip
        self.pause(wait)
        return None
