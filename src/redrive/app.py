"""App: register listeners with decorators, then run them. Wiring only."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from redrive.consumer.client import ConfluentClient
from redrive.consumer.commit import Commit
from redrive.consumer.loop import Loop
from redrive.consumer.spec import ListenerSpec
from redrive.errors import ConfigError, KafkaUnavailable, StopTimeout, UsageError
from redrive.events import EventBus, Lag
from redrive.message import Message, TopicPartition
from redrive.options import KafkaValue, ListenerOptions, Ordering, ShareListenerOptions
from redrive.outputs import declares_outputs
from redrive.recover.base import Recoverer
from redrive.recover.breaker import default_recoverer
from redrive.retry.backoff import BackOff
from redrive.retry.policy import Retry
from redrive.serde import DeserializerOption, resolve
from redrive.topics import (
    ChainRecoverer,
    MissingTopics,
    RetryTopics,
    TopicWatch,
    Waiting,
    ensure_topics,
    retry_listener,
    wanted_topics,
)

if TYPE_CHECKING:
    from redrive.share.group import ShareGroup
    from redrive.share.loop import ShareLoop

log = logging.getLogger("redrive.app")

RecordHandler = Callable[[Message], object]
"""A record listener: ``def handle(msg: Message) -> None`` or ``async def``."""
BatchHandler = Callable[[list[Message]], object]
"""A batch listener: ``def handle(batch: list[Message]) -> None`` or ``async def``."""

RecordHandlerT = TypeVar("RecordHandlerT", bound=RecordHandler)
BatchHandlerT = TypeVar("BatchHandlerT", bound=BatchHandler)
H = TypeVar("H", bound=Callable[..., object])

# Settings redrive owns: letting the client commit or store offsets by itself would break C1.
_RESERVED = {
    "enable.auto.commit": "redrive commits itself; choose commit=Commit.per_poll() (default), "
    "Commit.per_record(), Commit.interval(seconds) or Commit.manual()",
    "enable.auto.offset.store": "redrive stores only positions it has proven safe",
    "group.id": "pass group_id= to App or to the listener",
    "bootstrap.servers": "pass bootstrap_servers= to App (or set REDRIVE_BOOTSTRAP_SERVERS)",
}

SECRET_WORDS = ("password", "secret", "key", "token", "credential", "jaas")
_SASL_PLAIN = ("sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.kerberos.service.name")


def redact(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with secret values replaced, safe to log: every ``sasl.*`` setting but the
    mechanism, user name and service name, and any whose name says it holds a secret."""

    def secret(k: str) -> bool:
        name = k.lower()
        if name.startswith("sasl.") and name not in _SASL_PLAIN:
            return True
        return any(w in name for w in SECRET_WORDS) and "location" not in name

    return {k: "***" if secret(str(k)) else v for k, v in settings.items()}


class App:
    """A set of listeners sharing a Kafka cluster, a default group id and an event bus.

    ```python
    app = App(group_id="orders-service")  # Kafka at REDRIVE_BOOTSTRAP_SERVERS or 127.0.0.1:9092

    @app.listener("orders", max_poll_records=3)
    def handle(msg: Message) -> None: ...

    if __name__ == "__main__":
        app.run()   # blocks; app.stop() or SIGTERM/SIGINT stops it gracefully
    ```

    ``bootstrap_servers`` defaults to ``REDRIVE_BOOTSTRAP_SERVERS``, then ``127.0.0.1:9092``
    (``redrive run --bootstrap-servers`` wins over all three: it sets ``bootstrap_servers``,
    which is read when the App starts). ``connect_timeout``: seconds ``start()`` waits for
    a broker to answer before it raises ``KafkaUnavailable``; ``None`` waits until one does
    (what ``redrive run`` does unless given ``--give-up-after``).
    ``kafka`` holds confluent-kafka settings passed to every listener's client (security,
    timeouts...); a listener's own ``kafka=`` wins over them. ``lag_interval``: seconds
    between ``Lag`` events (each partition's lag, from the client's statistics); ``None``
    (the default) asks for none, unless metrics are attached (``redrive.observe``), which
    set it to 15 s.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        group_id: str | None = None,
        *,
        kafka: Mapping[str, Any] | None = None,
        bus: EventBus | None = None,
        connect_timeout: float | None = 10.0,
        lag_interval: float | None = None,
    ) -> None:
        self.bootstrap_servers = (
            bootstrap_servers or os.environ.get("REDRIVE_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
        )
        self.group_id = group_id
        self.kafka = dict(kafka or {})
        self.bus = bus or EventBus()
        self.connect_timeout = connect_timeout
        if lag_interval is not None and not lag_interval > 0:
            raise ConfigError("lag_interval", f"must be > 0 seconds or None, got {lag_interval!r}")
        self.lag_interval = lag_interval
        self.specs: list[ListenerSpec] = []
        self.loops: list[Loop | ShareLoop] = []
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._stopped = threading.Event()
        # per listener (its group and topics): what start() does when one of them is missing
        self._missing_topics: dict[tuple[str, tuple[str, ...]], MissingTopics] = {}
        self._watch: TopicWatch | None = None

    # -- registration -----------------------------------------------------------------

    def listener(
        self,
        topics: str | Iterable[str],
        *,
        group_id: str | None = None,
        max_poll_records: int = 500,
        key_deserializer: DeserializerOption = "bytes",
        value_deserializer: DeserializerOption = "bytes",
        commit: Commit | None = None,
        retry: Retry | None = None,
        recoverer: Recoverer | None = None,
        kafka: Mapping[str, KafkaValue] | None = None,
        poll_timeout: float = 0.5,
        name: str | None = None,
        retry_topics: RetryTopics | None = None,
        concurrency: int = 1,
        ordering: Ordering = "partition",
        max_in_flight: int | None = None,
        drain_timeout: float = 30.0,
        missing_topics: MissingTopics = "wait",
    ) -> Callable[[RecordHandlerT], RecordHandlerT]:
        """Register a record listener: ``handler(msg)`` once per record, in poll order.

        ```python
        @app.listener("orders", max_poll_records=100, value_deserializer="json")
        def handle(msg: Message) -> None: ...
        ```

        The handler takes one ``Message``; it may be ``async def``. The options are
        keyword-only; ``redrive.options.ListenerOptions`` documents each one and checks its
        type and value here, so a mistake raises ``ConfigError`` before anything runs.

        For I/O-bound handlers, ``concurrency=N`` handles up to N records at once (``async
        def`` handlers as tasks, plain functions on N threads), keeping the order given by
        ``ordering``; commits still never pass an unfinished record.
        """
        options = ListenerOptions(
            group_id=group_id,
            max_poll_records=max_poll_records,
            key_deserializer=key_deserializer,
            value_deserializer=value_deserializer,
            commit=commit,
            retry=retry,
            recoverer=recoverer,
            kafka=kafka,
            poll_timeout=poll_timeout,
            name=name,
            retry_topics=retry_topics,
            concurrency=concurrency,
            ordering=ordering,
            max_in_flight=max_in_flight,
            drain_timeout=drain_timeout,
            missing_topics=missing_topics,
        )
        return self._register(topics, options, batch=False)

    def batch_listener(
        self,
        topics: str | Iterable[str],
        *,
        group_id: str | None = None,
        max_poll_records: int = 500,
        key_deserializer: DeserializerOption = "bytes",
        value_deserializer: DeserializerOption = "bytes",
        commit: Commit | None = None,
        retry: Retry | None = None,
        recoverer: Recoverer | None = None,
        kafka: Mapping[str, KafkaValue] | None = None,
        poll_timeout: float = 0.5,
        name: str | None = None,
        retry_topics: RetryTopics | None = None,
        concurrency: int = 1,
        ordering: Ordering = "partition",
        max_in_flight: int | None = None,
        drain_timeout: float = 30.0,
        missing_topics: MissingTopics = "wait",
    ) -> Callable[[BatchHandlerT], BatchHandlerT]:
        """Register a batch listener: ``handler(batch)`` once per poll with a list of records.

        ```python
        @app.batch_listener("orders", max_poll_records=100)
        def handle(batch: list[Message]) -> None: ...
        ```

        Raise ``BatchFailed(index=i)`` to say which record failed; any other exception
        retries the whole batch. The handler takes a ``list[Message]``; it may be ``async
        def``. Options as for ``listener()`` (see ``redrive.options.ListenerOptions``), except
        ``concurrency``, ``ordering`` and ``max_in_flight``, which apply to record listeners.
        """
        options = ListenerOptions(
            group_id=group_id,
            max_poll_records=max_poll_records,
            key_deserializer=key_deserializer,
            value_deserializer=value_deserializer,
            commit=commit,
            retry=retry,
            recoverer=recoverer,
            kafka=kafka,
            poll_timeout=poll_timeout,
            name=name,
            retry_topics=retry_topics,
            concurrency=concurrency,
            ordering=ordering,
            max_in_flight=max_in_flight,
            drain_timeout=drain_timeout,
            missing_topics=missing_topics,
        )
        return self._register(topics, options, batch=True)

    def share_listener(
        self,
        topics: str | Iterable[str],
        *,
        group_id: str | None = None,
        share_group: ShareGroup | None = None,
        consumers: int = 1,
        max_poll_records: int = 500,
        key_deserializer: DeserializerOption = "bytes",
        value_deserializer: DeserializerOption = "bytes",
        retry: Retry | None = None,
        recoverer: Recoverer | None = None,
        kafka: Mapping[str, KafkaValue] | None = None,
        poll_timeout: float = 0.5,
        name: str | None = None,
        drain_timeout: float = 30.0,
        missing_topics: MissingTopics = "wait",
    ) -> Callable[[RecordHandlerT], RecordHandlerT]:
        """Register a record listener on a *share group* (KIP-932, Queues for Kafka).

        ```python
        @app.share_listener("jobs", group_id="workers", consumers=4,
                            share_group=ShareGroup(delivery_limit=5, lock_duration=30))
        def handle(msg: Message) -> None: ...   # msg.attempt: the broker's delivery count
        ```

        The broker hands each record to one member of the group, any number of members per
        partition, and counts its deliveries. A handled record is accepted; a retryable
        failure releases it (delivered again at once, to any member); a fatal failure, or
        the last attempt, is dead-lettered and rejected once the dead letter is confirmed.
        ``redrive.options.ShareListenerOptions`` documents each option; the README's
        "Share groups" section says what differs from ``listener()``.
        """
        options = ShareListenerOptions(
            group_id=group_id, share_group=share_group, consumers=consumers,
            max_poll_records=max_poll_records, key_deserializer=key_deserializer,
            value_deserializer=value_deserializer, retry=retry, recoverer=recoverer,
            kafka=kafka, poll_timeout=poll_timeout, name=name, drain_timeout=drain_timeout,
            missing_topics=missing_topics,
        )  # fmt: skip
        return self._register_share(topics, options, batch=False)

    def share_batch_listener(
        self,
        topics: str | Iterable[str],
        *,
        group_id: str | None = None,
        share_group: ShareGroup | None = None,
        consumers: int = 1,
        max_poll_records: int = 500,
        key_deserializer: DeserializerOption = "bytes",
        value_deserializer: DeserializerOption = "bytes",
        retry: Retry | None = None,
        recoverer: Recoverer | None = None,
        kafka: Mapping[str, KafkaValue] | None = None,
        poll_timeout: float = 0.5,
        name: str | None = None,
        drain_timeout: float = 30.0,
        missing_topics: MissingTopics = "wait",
    ) -> Callable[[BatchHandlerT], BatchHandlerT]:
        """Register a batch listener on a share group: ``handler(batch)`` once per poll.

        Raise ``BatchFailed(index=i)`` to say which record failed: the records before it
        are accepted, it goes to the failure engine, the rest are handed over again in the
        same delivery. Any other exception hands the batch over one record at a time.
        Options as for ``share_listener()``.
        """
        options = ShareListenerOptions(
            group_id=group_id, share_group=share_group, consumers=consumers,
            max_poll_records=max_poll_records, key_deserializer=key_deserializer,
            value_deserializer=value_deserializer, retry=retry, recoverer=recoverer,
            kafka=kafka, poll_timeout=poll_timeout, name=name, drain_timeout=drain_timeout,
            missing_topics=missing_topics,
        )  # fmt: skip
        return self._register_share(topics, options, batch=True)

    def _register_share(
        self, topics: str | Iterable[str], options: ShareListenerOptions, *, batch: bool
    ) -> Callable[[H], H]:
        from redrive.share.client import RESERVED
        from redrive.share.group import ShareGroup

        topic_list, group = self._topics_and_group(topics, options.group_id)
        user_kafka = {**self.kafka, **(options.kafka or {})}
        reserved = {k: _RESERVED[k] for k in ("group.id", "bootstrap.servers")}
        for key, why in {**reserved, **RESERVED}.items():
            if key in user_kafka:
                raise ConfigError(f"kafka:{key}", f"is set by redrive: {why}")
        self._no_clash(topic_list, group)
        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": group,
            **user_kafka,
        }
        key_des = resolve("key_deserializer", options.key_deserializer)
        value_des = resolve("value_deserializer", options.value_deserializer)

        def register(handler: H) -> H:
            if not callable(handler):
                raise ConfigError("handler", f"must be callable, got {handler!r}")
            if declares_outputs(handler):
                raise ConfigError(
                    "handler",
                    "returns Output records, which share listeners do not write (a share "
                    "group has no transactions and no commit to confirm them before): write "
                    "them with a producer of your own, or use app.listener()",
                )
            self.specs.append(
                ListenerSpec(
                    name=options.name or str(getattr(handler, "__qualname__", repr(handler))),
                    topics=topic_list,
                    group_id=group,
                    handler=handler,
                    batch=batch,
                    max_poll_records=options.max_poll_records,
                    key_deserializer=key_des,
                    value_deserializer=value_des,
                    commit=Commit.per_poll(),  # unused: acknowledgements replace commits
                    retry=options.retry or Retry(),
                    recoverer=(
                        options.recoverer if options.recoverer is not None else default_recoverer()
                    ),  # fmt: skip
                    kafka=settings,
                    poll_timeout=options.poll_timeout,
                    drain_timeout=options.drain_timeout,
                    share=options.share_group or ShareGroup(),
                    consumers=options.consumers,
                )
            )
            self._missing_topics[(group, topic_list)] = options.missing_topics
            return handler

        return register

    def _topics_and_group(
        self, topics: str | Iterable[str], group_id: str | None
    ) -> tuple[tuple[str, ...], str]:
        topic_list = (topics,) if isinstance(topics, str) else tuple(topics)
        if not topic_list or not all(isinstance(t, str) and t for t in topic_list):
            raise ConfigError("topics", f"give one or more topic names, got {topics!r}")
        group = group_id or self.group_id
        if not group:
            raise ConfigError("group_id", "no group id: pass group_id= to App or to the listener")
        return topic_list, group

    def _no_clash(self, topic_list: tuple[str, ...], group: str) -> None:
        for spec in self.specs:
            clash = set(spec.topics) & set(topic_list)
            if spec.group_id == group and clash:
                raise ConfigError(
                    "listener",
                    f"topic {sorted(clash)[0]!r} already has listener {spec.name!r} in group "
                    f"{group!r}; one listener per topic and group (use another group_id to "
                    "consume it twice)",
                )

    def _register(
        self, topics: str | Iterable[str], options: ListenerOptions, *, batch: bool
    ) -> Callable[[H], H]:
        """Check what one option cannot check alone, then return the decorator."""
        topic_list, group = self._topics_and_group(topics, options.group_id)
        concurrency, commit = options.concurrency, options.commit
        if batch:
            for option, default in (("concurrency", 1), ("ordering", "partition"),
                                    ("max_in_flight", None)):  # fmt: skip
                if getattr(options, option) != default:
                    raise ConfigError(option, "applies to record listeners (@app.listener) only")
        if concurrency > 1 and commit is not None and (commit.manual_ack or commit.after_record):
            raise ConfigError(
                "commit",
                f"Commit.{commit.name}() does not combine with concurrency > 1: records finish "
                "out of order; use Commit.per_poll() or Commit.interval()",
            )
        commit = commit or Commit.per_poll()
        retry, retry_topics, recoverer = options.retry, options.retry_topics, options.recoverer
        if retry_topics is not None and recoverer is not None:
            raise ConfigError(
                "recoverer", "a listener with retry_topics= ends its chain in <topic>-dlt; "
                "drop recoverer= (or drop retry_topics= to keep your recoverer)",
            )  # fmt: skip
        user_kafka = {**self.kafka, **(options.kafka or {})}
        for key, why in _RESERVED.items():
            if key in user_kafka:
                raise ConfigError(f"kafka:{key}", f"is set by redrive: {why}")
        self._no_clash(topic_list, group)
        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            # librdkafka waits 1 s before fetching again once its queue was full; 10 ms keeps
            # it fed (0 would spin and double the CPU)
            "fetch.queue.backoff.ms": 10,
            "enable.partition.eof": False,
            "partition.assignment.strategy": "cooperative-sticky",
            **commit.kafka_settings(),
            **user_kafka,
        }
        if str(settings.get("group.protocol", "classic")).lower() == "consumer":
            settings.pop("partition.assignment.strategy", None)  # the broker assigns
        key_des = resolve("key_deserializer", options.key_deserializer)
        value_des = resolve("value_deserializer", options.value_deserializer)

        def register(handler: H) -> H:
            if not callable(handler):
                raise ConfigError("handler", f"must be callable, got {handler!r}")
            self.specs.append(
                ListenerSpec(
                    name=options.name or str(getattr(handler, "__qualname__", repr(handler))),
                    topics=topic_list,
                    group_id=group,
                    handler=handler,
                    batch=batch,
                    max_poll_records=options.max_poll_records,
                    key_deserializer=key_des,
                    value_deserializer=value_des,
                    commit=commit,
                    retry=retry or Retry(),
                    recoverer=recoverer if recoverer is not None else default_recoverer(),
                    kafka=settings,
                    poll_timeout=options.poll_timeout,
                    concurrency=concurrency,
                    ordering=options.ordering,
                    max_in_flight=options.max_in_flight,
                    drain_timeout=options.drain_timeout,
                )
            )
            self._missing_topics[(group, topic_list)] = options.missing_topics
            if retry_topics is not None:  # failures hop to retry topics that a second
                spec = replace(  # consumer reads: the main partitions never wait (R4)
                    self.specs[-1],
                    retry=retry
                    or Retry(backoff=BackOff.none(), classifier=retry_topics.classifier),
                    recoverer=ChainRecoverer(retry_topics, topic_list, group),
                )
                self.specs[-1:] = [spec, retry_listener(spec, retry_topics)]
            return handler

        return register

    # -- running ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect every listener and start consuming in background threads.

        Waits for the broker up to ``connect_timeout`` seconds (``None``: until it answers,
        reporting every 10 s); ``stop()`` ends the wait, and then nothing is started. The
        bootstrap address is ``bootstrap_servers`` as it is when ``start()`` is called.
        """
        self._stopped.clear()
        self._start()

    def _start(self) -> None:
        if not self.specs:
            raise ConfigError("listeners", "no listener registered: use @app.listener(...)")
        if self._threads:
            raise UsageError(
                "this App is already running (or stopping): call stop(), then join(), before "
                "start()"
            )
        self._errors.clear()
        self.specs = [self._with_servers(spec) for spec in self.specs]
        clients = []
        loops: list[Loop | ShareLoop] = []
        shared: list[ShareLoop] = []
        try:
            for spec in self.specs:
                # bad settings raise ConfigError here; librdkafka's lines go through logging
                clients.append(self._client(spec))
            if not self._wait_for_brokers(clients):
                log.info("stopped while waiting for Kafka: no listener was started")
                for c in clients:
                    c.close()
                return
            waiting = self._ensure_topics() if not self._stopped.is_set() else []
            if self._stopped.is_set():  # a signal while topics were checked: start nothing
                log.info("stopped while starting: no listener was started")
                for c in clients:
                    c.close()
                return
            late = {w.topic for x in waiting for w in x.left}
            for i, spec in enumerate(self.specs):
                if late & set(spec.topics) and REFRESH not in spec.kafka:
                    # A consumer looks again for a subscribed topic it did not find only at its
                    # next metadata refresh (5 min by default): sooner for one that waits.
                    self.specs[i] = spec = replace(
                        spec, kafka={**spec.kafka, REFRESH: WAIT_REFRESH_MS}
                    )
                    clients[i].close()
                    clients[i] = self._client(spec)
            # Still inside the try: building a loop or describing a recoverer may raise too.
            for spec, c in zip(self.specs, clients, strict=True):
                if spec.share is None:
                    loops.append(Loop(spec, c, bus=self.bus))
                else:
                    built = self._share_loops(spec)
                    shared += built
                    loops += built
            for spec in self.specs:
                if spec.share is not None:
                    continue  # _share_loops logged it
                log.info(
                    "listener %s: topics=%s group=%s %s, commit=%s, retry=%s%s, recoverer=%s%s",
                    spec.name, ",".join(spec.topics), spec.group_id,
                    "batch" if spec.batch else "record", spec.commit.name, spec.retry.describe(),
                    " (default)" if spec.retry == Retry() else "", spec.recoverer.describe(),
                    " (default)" if spec.recoverer.describe() == default_recoverer().describe()
                    else "",
                )  # fmt: skip
                log.debug("listener %s client settings: %s", spec.name, redact(spec.kafka))
        except BaseException:
            for c in clients:
                c.close()
            for share_loop in shared:  # a share loop's client is its own
                share_loop.client.close()
            raise
        for spec, c in zip(self.specs, clients, strict=True):
            if spec.share is not None:  # it only checked the broker
                c.close()
        self.loops = loops
        # stop() sets the flag before it reads self.loops: one of the two sees the other.
        if self._stopped.is_set():
            for loop in loops:
                loop.stop()
        self._threads = [
            threading.Thread(target=self._run_loop, args=(loop,), name=f"redrive:{_name(loop)}")
            for loop in self.loops
        ]
        for t in self._threads:
            t.start()
        if waiting:
            self._watch = TopicWatch(waiting)
            if self._stopped.is_set():  # as for the loops: stop() may have come first
                self._watch.stop()
            self._watch.start()

    def _client(self, spec: ListenerSpec) -> ConfluentClient:
        """The client of a listener (for a share listener: the one that checks the broker
        answers), reporting each partition's lag when ``lag_interval`` is set."""
        settings = _check_settings(spec)
        if self.lag_interval is None or spec.share is not None:
            return ConfluentClient(settings)
        bus, name = self.bus, spec.name

        def on_lag(lags: tuple[tuple[TopicPartition, int], ...]) -> None:
            if bus:
                bus.emit(Lag(name, lags))

        return ConfluentClient(settings, on_lag=on_lag, lag_interval=self.lag_interval)

    def _share_loops(self, spec: ListenerSpec) -> list[ShareLoop]:
        """Write the share group's settings, then one loop (and client) per member."""
        from redrive.share import client as share_client
        from redrive.share.group import apply, reader
        from redrive.share.loop import Members, ShareLoop

        assert spec.share is not None
        share_client.check_version()
        timeout = 30.0 if self.connect_timeout is None else self.connect_timeout
        group = apply(spec.kafka, spec.group_id, spec.share, timeout)
        log.info(
            "share listener %s: topics=%s share group=%s %s, %d member(s), delivery limit %d "
            "(handled at most %d times), lock %gs, start %s, retry=%s, recoverer=%s",
            spec.name, ",".join(spec.topics), spec.group_id, "batch" if spec.batch else "record",
            spec.consumers, group.delivery_limit, group.delivery_limit - 1, group.lock_duration,
            group.auto_offset_reset, spec.retry.describe(), spec.recoverer.describe(),
        )  # fmt: skip
        settings = {**spec.kafka, "max.poll.records": spec.max_poll_records}
        members = Members(spec, group.delivery_limit, group.lock_duration,
                          reader(spec.kafka, spec.group_id))  # fmt: skip
        loops = []
        try:
            for i in range(spec.consumers):
                member = spec.name if spec.consumers == 1 else f"{spec.name}#{i + 1}"
                client = share_client.ShareClient(settings)
                loops.append(ShareLoop(spec, client, members=members, bus=self.bus,
                                       member=member))  # fmt: skip
        except BaseException:
            for loop in loops:
                loop.client.close()
            raise
        return loops

    def _ensure_topics(self) -> list[Waiting]:
        """Create the missing topics each listener may create, fail on those it must not
        miss (``ConfigError``), and return the listeners that wait for some."""
        admin_timeout = 30.0 if self.connect_timeout is None else self.connect_timeout
        waiting = []
        for spec in self.specs:
            missing = self._missing_topics.get((spec.group_id, spec.topics), "wait")
            wanted = wanted_topics(spec.topics, spec.recoverer, missing)
            left = ensure_topics(spec.kafka, wanted, admin_timeout)
            if left:
                waiting.append(Waiting(spec.name, spec.kafka, wanted, tuple(left)))
        return waiting

    def _with_servers(self, spec: ListenerSpec) -> ListenerSpec:
        """The spec with the App's current bootstrap address (the command line may have
        changed it after the listener was registered)."""
        if spec.kafka.get("bootstrap.servers") == self.bootstrap_servers:
            return spec
        return replace(spec, kafka={**spec.kafka, "bootstrap.servers": self.bootstrap_servers})

    def _wait_for_brokers(self, clients: list[ConfluentClient]) -> bool:
        """Ask until each client's broker answers: True then; False when stop() came first.
        Raises KafkaUnavailable after ``connect_timeout`` (never when it is None).

        The wait is a series of short metadata requests, so a stop (or a signal, whose
        handler runs between them) is seen within a fraction of a second."""
        limit = self.connect_timeout
        began = time.monotonic()
        report_at = began + CONNECT_REPORT_EVERY
        waited = 0.0
        for spec, client in zip(self.specs, clients, strict=True):
            while not self._stopped.is_set():
                left = CONNECT_SLICE if limit is None else limit - waited
                try:
                    client.check(max(0.05, min(CONNECT_SLICE, left)))
                    break
                except KafkaUnavailable as exc:
                    client.poll(1, 0.0)  # serves librdkafka's log lines (repeats held back)
                    waited = time.monotonic() - began
                    if limit is not None and waited >= limit:
                        raise KafkaUnavailable(
                            f"no Kafka broker answered at {self.bootstrap_servers} within "
                            f"{limit:g} s (listener {spec.name!r}): {exc}. Is the broker "
                            "running? For a local one: `redrive broker up`."
                        ) from None
                    if time.monotonic() >= report_at:
                        report_at += CONNECT_REPORT_EVERY
                        log.warning(
                            "no Kafka broker answers at %s yet (%.0f s, %s): still trying%s",
                            self.bootstrap_servers, waited, exc,
                            "" if limit is None else f" for up to {limit:g} s",
                        )  # fmt: skip
            else:
                return False
        if waited >= CONNECT_REPORT_EVERY:
            log.info("Kafka at %s answered after %.0f s", self.bootstrap_servers, waited)
        return True

    def _run_loop(self, loop: Loop | ShareLoop) -> None:
        try:
            loop.run()
        except BaseException as exc:
            log.error("listener %s stopped: %s", loop.spec.name, exc)
            self._errors.append(exc)
            self.stop()

    def stop(self) -> None:
        """Stop every listener gracefully (safe from any thread and from signal handlers).
        Called while ``start()`` waits for the broker, it ends the wait."""
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()
        for loop in self.loops:
            loop.stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the listeners to finish; re-raise the first error one of them hit."""
        for t in self._threads:
            t.join(timeout)
        if all(not t.is_alive() for t in self._threads):
            self._threads = []
            self._join_watch(timeout)
        if self._errors:
            raise self._errors[0]

    def run(self, *, handle_signals: bool = True) -> None:
        """Run until ``stop()``, SIGTERM or SIGINT; then finish, commit, leave the group.

        A signal is honoured whatever the App is doing: waiting for the broker, waiting for
        partitions, handling a record or waiting out a back-off. A second signal exits the
        process at once with code 128 + the signal's number (130 for SIGINT, 143 for
        SIGTERM), committing nothing more. A handler still running ``drain_timeout`` seconds
        after the stop raises ``StopTimeout``; its record stays uncommitted. (Committing and
        leaving the group after the drain may take ``STOP_GRACE`` seconds more.)

        Refused with ``UsageError`` while ``redrive run`` imports the App's module: guard
        the call with ``if __name__ == "__main__":``.

        The process is the App's: unless the interpreter's garbage collector was tuned
        already, its first threshold is raised (see ``tune_gc``).
        """
        refuse_run_while_importing()
        self._stopped.clear()
        signals = 0

        def on_signal(signum: int, frame: FrameType | None) -> None:
            nonlocal signals
            signals += 1
            name = signal.Signals(signum).name
            if signals == 1:
                log.info("received %s: stopping gracefully (send it again to exit at once)", name)
                self.stop()
                return
            log.warning(
                "received %s again: exiting at once with code %d; records being handled "
                "are not committed (they are handled again by the next owner)",
                name, 128 + signum,
            )  # fmt: skip
            _flush_logs()
            os._exit(128 + signum)

        previous: dict[signal.Signals, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        waited = False
        try:
            tune_gc()
            self._start()
            while not self._stopped.wait(0.2):
                pass
            waited = True
            self._finish()
        finally:
            self.stop()
            if not waited:  # an error on the way: still bounded, but say nothing more
                self._finish(quiet=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _finish(self, *, quiet: bool = False) -> None:
        """Wait, bounded by the drain timeout, for the stopped listeners to close; then
        raise StopTimeout (a handler is still running) or the first listener error."""
        drain = max((spec.drain_timeout for spec in self.specs), default=0.0)
        drained = time.monotonic() + drain
        for loop, t in zip(self.loops, self._threads, strict=False):
            while t.is_alive():
                # a loop that has not begun to close by then is inside a handler: give up on
                # it; one that is closing (committing, leaving) gets STOP_GRACE more
                now = time.monotonic()
                if now >= drained + STOP_GRACE or (now >= drained and not loop.closing):
                    break
                t.join(0.2)  # short joins: signal handlers run in between
        self._join_watch(STOP_GRACE)
        stuck = [t.name.removeprefix("redrive:") for t in self._threads if t.is_alive()]
        if quiet:
            return
        if stuck:
            raise StopTimeout(
                f"listener(s) {', '.join(stuck)} still busy (in a handler) {drain:g} s "
                "(drain_timeout) after the stop: their records stay uncommitted and are "
                "handled again by the next owner"
            ) from (self._errors[0] if self._errors else None)
        self._threads = []
        if self._errors:
            raise self._errors[0]

    def _join_watch(self, timeout: float | None) -> None:
        """Once the listeners have ended: stop looking for missing topics, and wait for it."""
        watch = self._watch
        if watch is not None:
            watch.stop()
            if watch.join(timeout):
                self._watch = None


def _check_settings(spec: ListenerSpec) -> dict[str, Any]:
    """The settings of the client that checks the broker answers: a share listener's
    without those only a share consumer takes."""
    if spec.share is None:
        return dict(spec.kafka)
    return {k: v for k, v in spec.kafka.items() if not k.startswith(("share.", "max.poll."))}


def _name(loop: Loop | ShareLoop) -> str:
    """The thread name of a loop: its listener's, or its share-group member's."""
    return loop.spec.name if isinstance(loop, Loop) else loop.name


REFRESH = "topic.metadata.refresh.interval.ms"
WAIT_REFRESH_MS = 5000
"""librdkafka's metadata refresh interval for a listener whose topics are missing at start
(unless you set it): it consumes a topic at most about 5 s after it appears."""
CONNECT_SLICE = 0.5
"""Seconds one metadata request waits while start() waits for the broker."""
CONNECT_REPORT_EVERY = 10.0
"""Seconds between the log lines saying that start() is still waiting for the broker."""
STOP_GRACE = 10.0
"""Seconds a stop allows, beyond the listeners' drain_timeout, to commit and leave the group."""


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: S110 - exiting anyway
            pass


# -- the run guard ------------------------------------------------------------------------

_importing: str | None = None
"""The ``module:app`` that ``redrive run`` is importing, while it does."""


@contextmanager
def importing_for_run(target: str) -> Iterator[None]:
    """While ``redrive run`` imports the module of `target` (``module:app``), ``App.run()``
    is refused: the module defines the App, and ``redrive run`` runs it, once."""
    global _importing
    previous, _importing = _importing, target
    try:
        yield
    finally:
        _importing = previous


def refuse_run_while_importing() -> None:
    """Raise UsageError when called while ``redrive run`` imports an App's module."""
    if _importing is None:
        return
    module = _importing.partition(":")[0]
    raise UsageError(
        f"App.run() was called while `redrive run {_importing}` imported {module!r}: the "
        "import would run the App, and `redrive run` would then run it a second time. Guard "
        'the call in the module: `if __name__ == "__main__": app.run()` (then `python` runs '
        "the file, and `redrive run` runs the App)"
    )


GC_THRESHOLD = 20_000
"""The first garbage-collection threshold ``App.run()`` sets (CPython's default is 700)."""


def tune_gc() -> None:
    """Raise the garbage collector's first threshold from CPython's default (700) to
    ``GC_THRESHOLD``, unless someone chose a threshold already.

    A consumer holds each poll's records (the client's and the ``Message`` wrapping each)
    until they are handled: with 500-record polls that is 1,000 new objects, over 700, so
    the default starts a collection every poll, which finds nothing to free (about 0.2 us
    per record on the loop thread, a fifth of redrive's cost). Fewer collections free the
    same garbage later; reference counting frees everything else at once, as before.
    """
    threshold = gc.get_threshold()
    if threshold[0] == 700:
        gc.set_threshold(GC_THRESHOLD, *threshold[1:])
