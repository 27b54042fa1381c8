"""Handing a retry-topic record over when it is due.

``due_gate`` wraps the handler of the retry-topic consumer: a record that is not yet due
raises ``Defer``, which pauses its partition until then without committing it, so the poll
loop never sleeps and never hands a record over early.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from redrive import headers as rt
from redrive.errors import Defer
from redrive.listener import ListenerSpec
from redrive.message import Message
from redrive.topics.chain import RetryTopics
from redrive.topics.recoverer import ChainRecoverer


def _wait(msg: Message) -> float:
    """Seconds until `msg` is due (<= 0: due now)."""
    due = rt.due_ms(msg)
    return 0.0 if due is None else (due - time.time() * 1000) / 1000


def due_gate(handler: Callable[[Any], Any], *, batch: bool) -> Callable[[Any], Any]:
    """Wrap a retry-topic handler: never hand a record over before its due time (R4)."""

    def ready(arg: Any) -> Any:
        if not batch:
            wait = _wait(arg)
            if wait > 0:
                raise Defer(wait)
            arg.attempt = rt.attempts_of(arg) or arg.attempt
            return arg
        for i, m in enumerate(arg):
            wait = _wait(m)
            if wait > 0:
                return i, wait
            m.attempt = rt.attempts_of(m) or m.attempt
        return None

    if not batch:
        if inspect.iscoroutinefunction(handler):

            async def gate_async(msg: Message) -> Any:
                return await handler(ready(msg))

            return gate_async

        def gate(msg: Message) -> Any:
            return handler(ready(msg))

        return gate

    # A batch: the records due now go to the handler; the first one that is not due is
    # handed back with Defer(index=...), which pauses its partition (records of other
    # partitions after it are offered again at once).
    if inspect.iscoroutinefunction(handler):

        async def gate_batch_async(msgs: list[Message]) -> Any:
            not_due = ready(msgs)
            if not_due is None:
                return await handler(msgs)
            if not_due[0]:
                await handler(msgs[: not_due[0]])
            raise Defer(not_due[1], index=not_due[0])

        return gate_batch_async

    def gate_batch(msgs: list[Message]) -> Any:
        not_due = ready(msgs)
        if not_due is None:
            return handler(msgs)
        if not_due[0]:
            handler(msgs[: not_due[0]])
        raise Defer(not_due[1], index=not_due[0])

    return gate_batch


def retry_listener(spec: ListenerSpec, chain: RetryTopics) -> ListenerSpec:
    """The listener that consumes `spec`'s retry topics: same handler behind a due gate,
    its own group (``<group><suffix>``), the same chain for the next hop."""
    group = spec.group_id + chain.group_suffix
    return replace(
        spec,
        name=spec.name + chain.group_suffix,
        topics=tuple(t for s in spec.topics for t in chain.retry_topics(s)),
        group_id=group,
        handler=due_gate(spec.handler, batch=spec.batch),
        # one record at a time: a record not yet due pauses its partition (R4) rather than
        # holding a worker asleep
        concurrency=1,
        recoverer=ChainRecoverer(chain, spec.topics, spec.group_id),
        # librdkafka keeps one fetch per broker in flight; while the broker holds a long
        # poll for empty partitions, a partition resumed at its due time waits for it. A
        # short wait keeps retries close to their due time (unless you set your own).
        kafka={"fetch.wait.max.ms": 50, **spec.kafka, "group.id": group},
    )
