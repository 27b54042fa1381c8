"""Outputs and transactions: the Committer of a listener whose handler writes records.

The handler returns ``Output`` records (``redrive.outputs``); ``wrap`` hands them to the
listener's ``OutputProducer``. What a commit means then depends on the commit policy:

- Any policy but ``Commit.transaction()``: before positions are committed, the broker must
  have confirmed every output written so far (at-least-once). An output the broker refuses
  rewinds the partitions to their last committed positions: their records are handled
  again, nothing is lost.
- ``Commit.transaction()``: every commit is the commit of a Kafka transaction that holds the
  outputs, the dead letters and retry hops (recoverers write through ``publisher``) and the
  positions of *all* partitions, with their attempt metadata, sent with the consumer's
  group metadata (KIP-447). Nothing else is ever committed, so a ``read_committed`` reader
  sees an output exactly when the position past its record is committed.

A failure inside a transaction (the handler raised, or Kafka answered with an abortable
error) *dooms* it: from then on nothing is committed and nothing is recovered until the
next ``flush``, which aborts it and rewinds every partition whose records it held to the
last committed position (``Aborted`` event). The failure engine meanwhile did what it always
does: counted the attempt, chose the back-off, kept the attempt state; that state is then
committed, alone, in a transaction of its own. When a record's retries are over, its
recovery waits for its next delivery (``defer_recovery``): the dead letter is then written
in the same transaction as the outputs and positions of the records before it, so neither is
visible without the other.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from redrive.consumer.client import Client
from redrive.consumer.commit import Commit
from redrive.consumer.committer import Committer, Payload
from redrive.consumer.offsets import Runs
from redrive.consumer.pauser import Pauser
from redrive.consumer.producer import OutputProducer
from redrive.consumer.spec import ListenerSpec
from redrive.errors import (
    BatchFailed,
    CommitFailed,
    Defer,
    ProducerFenced,
    TransactionAborted,
)
from redrive.events import Aborted, EventBus
from redrive.message import Message, TopicPartition
from redrive.outputs import outputs_of
from redrive.retry.attempts import Attempt

log = logging.getLogger("redrive.commit")


class OutputCommitter(Committer):
    """A ``Committer`` that confirms (or commits, in a transaction) a listener's outputs
    together with its positions."""

    def __init__(
        self,
        name: str,
        client: Client,
        policy: Commit,
        bus: EventBus,
        outputs: OutputProducer,
        pauser: Pauser,
        *,
        persist: bool,
        window: int,
    ) -> None:
        super().__init__(name, client, policy, bus, persist=persist, window=window)
        self.outputs = outputs
        self.pauser = pauser  # rewinds partitions (and holds back the rest of their poll)
        self.transactional = outputs.transactional
        # What is final in an open transaction (a staged dead letter) is not final until it
        # commits: no "k" in the metadata, and no close-time retry of window commits.
        self.carries_done = not self.transactional
        self.publisher = outputs.publisher if self.transactional else None
        self.doomed: str | None = None  # why the open transaction must be aborted
        self.fatal: ProducerFenced | None = None  # the producer is unusable: commit nothing
        self._base: dict[TopicPartition, int] = {}  # last committed position (or first read)
        self._dropped: dict[tuple[TopicPartition, int], Attempt] = {}  # state dropped in it
        if not self.window:  # no ``_go_live`` to note a partition's first position
            self.deliver = self._deliver_noting_base  # type: ignore[method-assign]

    # -- the handler's side ---------------------------------------------------------------

    def wrap(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """`handler`, writing the outputs it returns; with transactions, its raising dooms
        the open transaction (what it wrote before is aborted with it)."""
        take, failed = self.take, self.handler_failed
        if not self.transactional and not inspect.iscoroutinefunction(handler):
            return self._wrap_plain(handler)

        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def wrapped_async(arg: Any) -> None:
                try:
                    result = await handler(arg)
                except (BatchFailed, Defer) as signal:  # the records before it are done
                    take(signal.outputs)
                    failed(signal)
                    raise
                except BaseException as exc:
                    failed(exc)
                    raise
                take(result)

            return wrapped_async

        @functools.wraps(handler)
        def wrapped(arg: Any) -> None:
            try:
                result = handler(arg)
            except (BatchFailed, Defer) as signal:  # the records before it are done
                take(signal.outputs)
                failed(signal)
                raise
            except BaseException as exc:
                failed(exc)
                raise
            take(result)

        return wrapped

    def _wrap_plain(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Without transactions: a handler returning None costs one check."""
        take = self.take

        @functools.wraps(handler)
        def wrapped(arg: Any) -> None:
            try:
                result = handler(arg)
            except (BatchFailed, Defer) as signal:  # the records before it are done
                take(signal.outputs)
                raise
            if result is not None:
                take(result)

        return wrapped

    def take(self, result: object) -> None:
        """Write the outputs in a handler's `result`. With transactions, Kafka refusing one
        (an abortable error) is no failure of the handler: the transaction is doomed, and
        its abort hands the record over again, counting no attempt."""
        try:
            for output in outputs_of(result):
                self.outputs.send(output)
        except TransactionAborted as exc:
            if not self.transactional:
                self.handler_failed(exc)
                raise
            log.warning("%s: writing an output failed, aborting the transaction: %s",
                        self.name, exc)  # fmt: skip
            self._doom(f"{type(exc).__name__}: {exc}")
        except BaseException as exc:
            self.handler_failed(exc)
            raise

    def handler_failed(self, exc: BaseException) -> None:
        if isinstance(exc, ProducerFenced):  # from writing an output: the listener stops
            self.fatal = exc
        if self.transactional:
            self._doom(f"{type(exc).__name__}: {exc}")

    def _doom(self, why: str) -> None:
        """The open transaction will be aborted: the rest of the poll is not handed over.
        Every partition this consumer has handled records of is parked at its last committed
        position until the next step (a partition first seen later in this poll is handled,
        then rewound with the others at the abort)."""
        if self.doomed is not None:
            return
        self.doomed = why
        for tp in self.tracker.partitions:
            base = self._base.get(tp)
            if base is not None and tp not in self.pauser:
                self.pauser.rewind(tp, base)

    def defer_recovery(self) -> bool:
        """True while the open transaction is doomed: a recovery now would be aborted with
        it, so it waits for the record's next delivery (in a transaction of its own)."""
        return self.doomed is not None

    # -- bookkeeping a transaction may have to undo ----------------------------------------

    # A partition's first position (until a commit) is its first delivered offset. With an
    # owner's window it is noted when the window is first committed (``_go_live``, once per
    # partition); without, per delivered record.

    def _deliver_noting_base(self, msg: Message) -> None:
        if msg.tp not in self._base:
            self._base[msg.tp] = msg.offset
        Committer.deliver(self, msg)

    def deliver_many(self, msgs: Iterable[Message], runs: Runs | None = None) -> Runs:
        runs = super().deliver_many(msgs, runs)
        if not self.window and not self._base.keys() >= self.tracker.partitions.keys():
            self._note_bases()
        return runs

    def _go_live(self) -> None:
        self._note_bases()
        super()._go_live()

    def _note_bases(self) -> None:
        base = self._base
        for tp, p in self.tracker.partitions.items():
            if tp not in base and (pos := p.position()) is not None:
                base[tp] = pos

    def drop_state(self, msg: Message) -> None:
        if self.transactional:
            state = self.state(msg)
            if state is not None:  # back if the transaction is aborted
                self._dropped[(msg.tp, msg.offset)] = state
        super().drop_state(msg)

    def assigned(self, tp: TopicPartition, pos: int, metadata: str | None) -> None:
        super().assigned(tp, pos, metadata)
        if pos >= 0:
            self._base[tp] = pos

    def _after_commit(self, payload: Payload, reason: str) -> None:
        for tp, (pos, _) in payload.items():
            self._base[tp] = pos
        super()._after_commit(payload, reason)

    # -- commits --------------------------------------------------------------------------

    def _commit(self, payload: Payload, reason: str, *, sync: bool) -> None:
        """Without transactions: confirm the outputs, then commit as always."""
        if self.transactional:
            self._transaction(payload, reason)
            return
        if self.outputs.pending:
            try:
                self.outputs.commit({})
            except CommitFailed as exc:
                log.warning("%s: %s; handling their records again", self.name, exc)
                self._rewind(str(exc))
                return
        super()._commit(payload, reason, sync=sync)

    def commit_now(self, tp: TopicPartition, reason: str = "attempt") -> None:
        """With transactions: attempt state that must survive a crash *now* (a running mark,
        the owner's window) is committed at once, outside the transaction, at the last
        position a transaction committed: it moves past nothing the transaction holds."""
        if not self.transactional:
            super().commit_now(tp, reason)
            return
        base = self._base.get(tp)
        if self.doomed is not None or base is None or self.fatal:  # the next flush commits it
            return
        Committer._commit(self, {tp: (base, self._metadata(tp, base, False))}, reason, sync=True)

    def flush(
        self, reason: str, *, sync: bool = False, only: Sequence[TopicPartition] = ()
    ) -> None:
        """With transactions: abort a doomed transaction and rewind, then commit every
        changed position (one transaction holds all partitions; ``only`` names those
        handed over, whose metadata is clean)."""
        if not self.transactional:
            super().flush(reason, sync=sync, only=only)
            return
        if self.fatal is not None:  # the listener is stopping with it: nothing more commits
            return
        self.drain_acks()
        if self.doomed is not None:
            self._abort(self.doomed)
        # A hand-over is clean (no window) for the partitions given up (`only`) or, at a
        # stop, for all; the partitions kept keep their window.
        clean = set(only) if only else None
        self._transaction(self._changed(clean=clean if sync else set()), reason)
        if self.doomed is not None:  # the commit itself failed: abort and rewind now
            self._abort(self.doomed)

    def _changed(self, *, clean: set[TopicPartition] | None) -> Payload:
        """The positions that changed; `clean`: the partitions handed over (None: all)."""
        payload: Payload = {}
        for tp, pos in self.tracker.positions().items():
            entry = (pos, self._metadata(tp, pos, clean is None or tp in clean))
            if self._committed.get(tp) != entry:
                payload[tp] = entry
        return payload

    def _transaction(self, payload: Payload, reason: str) -> None:
        if not payload and not self.outputs.pending:
            return
        if self.publisher is not None and self.publisher.unsettled:
            # A dead letter or retry hop the broker did not acknowledge in time is in the
            # open transaction, its record not finished: committing would make it visible
            # with the positions before its record.
            self.doomed = self.doomed or "a dead-letter or retry write was not acknowledged"
            return
        try:
            self.outputs.commit(payload)
        except TransactionAborted as exc:
            log.warning("%s: transaction not committed, aborting it: %s", self.name, exc)
            self.doomed = str(exc)
            return
        except ProducerFenced as exc:
            self.fatal = exc
            raise
        self._committed.update(payload)
        self._dropped.clear()
        self._after_commit(payload, reason)

    def _abort(self, why: str) -> None:
        self.doomed = None
        try:
            self.outputs.abort()
        except TransactionAborted as exc:  # the next transaction starts clean regardless
            log.warning("%s: aborting the transaction: %s", self.name, exc)
        except ProducerFenced as exc:
            self.fatal = exc
            raise
        self._rewind(why)

    def _rewind(self, why: str) -> None:
        """Take every partition whose records the lost writes belonged to back to its last
        committed position: those records are handled again."""
        rewound = []
        for tp, p in self.tracker.partitions.items():
            base, pos = self._base.get(tp), p.position()
            if base is None or pos is None or pos <= base:
                continue
            p.reset_to(base)
            self.pauser.rewind(tp, base)
            rewound.append((tp, base))
            final = self._final.get(tp)
            if final:
                final.difference_update([o for o in final if o >= base])
                if not final:
                    del self._final[tp]
        for (tp, offset), state in self._dropped.items():
            if tp in self.tracker.partitions:
                state.running = False
                self.states.setdefault(tp, {}).setdefault(offset, state)
        self._dropped.clear()
        log.info("%s: transaction aborted (%s); rewound %s", self.name, why,
                 ", ".join(f"{tp}@{pos}" for tp, pos in rewound) or "nothing")  # fmt: skip
        if self.bus:
            self.bus.emit(Aborted(self.name, why, tuple(rewound)))

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Lost partitions (a revocation committed first): their work in the open
        transaction must not be committed by anyone, so the transaction is aborted."""
        partitions = list(partitions)
        if self.transactional and self.outputs.pending:
            for tp in partitions:
                self.tracker.drop(tp)
            self._abort(self.doomed or "partitions lost")
        super().forget(partitions)
        for tp in partitions:
            self._base.pop(tp, None)

    def close(self) -> None:
        self.outputs.close()


def wants_outputs(handler: Callable[..., Any]) -> bool:
    """False when `handler` is declared to return None (it writes no outputs)."""
    try:
        returns = inspect.signature(handler).return_annotation
    except (TypeError, ValueError):
        return True
    return returns not in (None, "None")


def committer_for(
    spec: ListenerSpec,
    client: Client,
    bus: EventBus,
    pauser: Pauser,
    *,
    persist: bool,
    window: int,
) -> tuple[Committer, ListenerSpec]:
    """The committer of `spec`'s loop, and the spec with its handler wrapped when outputs
    are possible (a handler not declared ``-> None``, or a transaction)."""
    commit = spec.commit
    if not commit.transactional and not wants_outputs(spec.handler):
        return Committer(spec.name, client, commit, bus, persist=persist, window=window), spec
    txn_id = None
    if commit.transactional:
        prefix = commit.transactional_id or f"redrive-{spec.group_id}-{uuid.uuid4().hex[:12]}"
        txn_id = f"{prefix}.{spec.name}"
    outputs = client.outputs(spec.kafka, txn_id)
    if txn_id is not None:  # now: fence an older instance before consuming anything
        outputs.start()
    committer = OutputCommitter(spec.name, client, commit, bus, outputs, pauser,
                                persist=persist, window=window)  # fmt: skip
    return committer, replace(spec, handler=committer.wrap(spec.handler))
