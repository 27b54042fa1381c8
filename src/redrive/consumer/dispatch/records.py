"""Record listeners, one record at a time on the loop thread, in poll order.

One record's path: ``gate`` (may it be handed over now?), the handler, then ``succeeded``
or ``failed``; a record that must wait parks its partition, and the rest of the poll of that
partition is dropped (seek retries fetch it again) or held (in-place retries).
"""

from __future__ import annotations

from collections.abc import Sequence

from redrive.consumer.dispatch.base import Parts, park, run_sync
from redrive.consumer.failures import Hold
from redrive.consumer.pauser import Parked
from redrive.errors import Defer, ListenerStopped
from redrive.events import Delivered
from redrive.message import Message, TopicPartition


class Records:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self._call, self._release = run_sync(parts.spec.handler)

    def before_poll(self, timeout: float, max_records: int) -> tuple[float, int]:
        return timeout, max_records

    def dispatch(self, msgs: Sequence[Message]) -> None:
        parts = self.parts
        engine, committer, pauser = parts.engine, parts.committer, parts.pauser
        after_record = parts.spec.commit.after_record
        waiting: dict[TopicPartition, tuple[float, list[Message]]] = {}
        for msg in msgs:
            tp = msg.tp
            if tp in waiting:
                waiting[tp][1].append(msg)
                continue
            if tp in pauser or parts.stopping():
                continue  # stale fetch of a paused partition, or stopping: not delivered
            committer.deliver(msg)
            hold = engine.gate(msg)
            if hold is None:
                hold = self.handle(msg)
            if hold is not None and hold.delay is not None:
                waiting[tp] = (hold.delay, [msg])
            elif after_record:
                committer.flush("record")
        for tp, (delay, held) in waiting.items():
            park(parts, tp, delay, held)

    def handle(self, msg: Message) -> Hold | None:
        """Hand one record to the handler; None when it succeeded."""
        parts = self.parts
        if parts.bus:
            parts.bus.emit(Delivered(parts.spec.name, ((msg.tp, msg.offset, msg.attempt),)))
        try:
            self._call(msg)
        except ListenerStopped:
            raise
        except Defer as defer:
            return parts.engine.wait(msg, defer.delay)
        except Exception as exc:
            return parts.engine.failed(msg, exc)
        parts.engine.succeeded(msg)
        return None

    def resumed(self, parked: Parked) -> None:
        if parked.held:
            self.dispatch(parked.held)

    def settle(self) -> None:
        pass

    def idle(self, wait: float = 0.0) -> bool:
        return True

    def revoke(self, partitions: Sequence[TopicPartition], timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        self._release()
