"""Record listeners, one record at a time on the loop thread, in poll order.

One record's path: ``gate`` (may it be handed over now?), the handler, then ``succeeded``
or ``failed``; a record that must wait parks its partition, and the rest of the poll of that
partition is dropped (seek retries fetch it again) or held (in-place retries).
"""

from __future__ import annotations

from collections.abc import Sequence

from redrive.consumer.dispatch.base import OnLoopThread, park
from redrive.consumer.pauser import Parked
from redrive.message import Message, TopicPartition


class Records(OnLoopThread):
    def dispatch(self, msgs: Sequence[Message]) -> None:
        parts = self.parts
        engine, committer, pauser = parts.engine, parts.committer, parts.pauser
        after_record = parts.spec.commit.after_record
        waiting: dict[TopicPartition, tuple[float, list[Message]]] = {}
        parked, stopping = pauser.parked, parts.stopping
        plain = engine.plain()  # nothing to check before a record: the gate can be skipped
        for msg in msgs:
            tp = msg.tp
            if tp in waiting:
                waiting[tp][1].append(msg)
                continue
            if tp in parked or stopping():
                continue  # stale fetch of a paused partition, or stopping: not delivered
            committer.deliver(msg)
            hold = None if plain and msg.error is None else engine.gate(msg)
            if hold is None:
                hold = self.hand_over(msg, msg)
            if hold is not None:
                plain = False
                if hold.delay is not None:
                    waiting[tp] = (hold.delay, [msg])
            if after_record:
                committer.flush("record")
        for tp, (delay, held) in waiting.items():
            park(parts, tp, delay, held)

    def resumed(self, parked: Parked) -> None:
        if parked.held:
            self.dispatch(parked.held)
