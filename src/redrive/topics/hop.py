"""The consumer of a listener's retry topics.

``retry_listener`` builds it from the listener: the same handler, with due times on, so the
loop's failure engine never hands a record over before it is due (R4): it pauses the
partition until then, without committing the record and without counting an attempt.
"""

from __future__ import annotations

from dataclasses import replace

from redrive.consumer.spec import ListenerSpec
from redrive.topics.chain import RetryTopics
from redrive.topics.recoverer import ChainRecoverer


def retry_listener(spec: ListenerSpec, chain: RetryTopics) -> ListenerSpec:
    """The listener that consumes `spec`'s retry topics: same handler, due times on, its
    own group (``<group><suffix>``), the same chain for the next hop."""
    group = spec.group_id + chain.group_suffix
    return replace(
        spec,
        name=spec.name + chain.group_suffix,
        topics=tuple(t for s in spec.topics for t in chain.retry_topics(s)),
        group_id=group,
        due_times=True,
        # one record at a time: a record not yet due pauses its partition (R4) rather than
        # holding a lane
        concurrency=1,
        recoverer=ChainRecoverer(chain, spec.topics, spec.group_id),
        # librdkafka keeps one fetch per broker in flight; while the broker holds a long
        # poll for empty partitions, a partition resumed at its due time waits for it. A
        # short wait keeps retries close to their due time (unless you set your own).
        kafka={"fetch.wait.max.ms": 50, **spec.kafka, "group.id": group},
    )
