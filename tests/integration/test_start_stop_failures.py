"""Nothing leaks when starting or stopping fails: every Kafka consumer is closed, its group
left, and no thread stays behind (issue 10, item 6).

What a user can observe is checked: the group's members as the broker reports them, the
error ``App.join()`` / ``App.run()`` raises, the log, and the threads of the process (the
``redrive:`` threads by name, and the native threads librdkafka starts per client).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from redrive import App, Message, admin
from redrive.consumer.commit import Commit
from redrive.errors import ConfigError, KafkaUnavailable
from redrive.recover.base import Context, ListenerContext, Recoverer
from redrive.topics import RetryTopics

from .helpers import FAST, running, wait_for

pytestmark = pytest.mark.integration


class BrokenStart(Recoverer):
    """A recoverer whose producer cannot start: ``start`` raises (after ``before()``)."""

    def __init__(self, before: Callable[[], None] = lambda: None) -> None:
        self.before = before

    def start(self, listener: ListenerContext) -> None:
        self.before()
        raise RuntimeError("dead-letter producer refused to start")

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        raise AssertionError("never reached: the listener did not start")


class BrokenClose(Recoverer):
    """A recoverer whose producer cannot be closed: ``close`` raises."""

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        raise AssertionError("no record fails in these tests")

    def close(self) -> None:
        raise RuntimeError("dead-letter producer flush timed out")


class BrokenDescribe(Recoverer):
    """A recoverer that cannot describe itself for the start-up log."""

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        raise AssertionError("never reached: the listener did not start")

    def describe(self) -> str:
        raise RuntimeError("describe failed: no producer settings")


# Answers that only mean "ask again": the group's coordinator is starting or moving.
_COORDINATOR_BUSY = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
}


class Groups:
    """The broker's view of consumer groups, through the admin client."""

    def __init__(self, kafka: str) -> None:
        self.admin = AdminClient({"bootstrap.servers": kafka, "log_level": 0})

    def members(self, group: str) -> list[str] | None:
        """The group's member ids; None when the group is Empty, Dead or unknown; raises
        LookupError while the broker cannot tell yet (its coordinator is loading)."""
        future = self.admin.describe_consumer_groups([group], request_timeout=10)[group]
        try:
            desc = future.result()
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return None
            if err.retriable() or err.code() in _COORDINATOR_BUSY:
                raise LookupError(err.str()) from None
            raise
        if desc.state in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD):
            assert not desc.members, f"{group}: {desc.state} with members {desc.members}"
            return None
        return [m.member_id for m in desc.members]

    def _is(self, group: str, check: Callable[[list[str] | None], bool]) -> bool:
        try:
            return check(self.members(group))
        except LookupError:
            return False

    def wait_joined(self, group: str) -> None:
        wait_for(lambda: self._is(group, bool), what=f"a member in group {group}")

    def wait_left(self, group: str) -> None:
        wait_for(lambda: self._is(group, lambda m: m is None), what=f"{group} to have no member")


@pytest.fixture
def groups(kafka: str) -> Groups:
    return Groups(kafka)


def os_threads() -> int:
    """Threads of this process, native ones included (librdkafka starts several per client)."""
    return len(os.listdir("/proc/self/task"))


@pytest.fixture
def nothing_left() -> Iterator[Callable[[], None]]:
    """A check that no redrive thread and no client's native thread outlived the App."""
    before = os_threads()

    def check() -> None:
        def redrive_threads() -> list[str]:
            return [t.name for t in threading.enumerate() if t.name.startswith("redrive:")]

        wait_for(lambda: not redrive_threads(), timeout=15, what="redrive threads to end")
        # A Kafka client that is still open keeps its librdkafka threads: count them all.
        wait_for(lambda: os_threads() <= before, timeout=15, what="native threads to end")

    yield check


def test_recoverer_start_failure_stops_and_leaves_the_group(
    kafka, make_topic, names, groups, nothing_left
) -> None:
    failing, healthy = make_topic("failing"), make_topic("healthy")
    group = names.group()
    app = App(kafka, group, kafka=FAST)

    # The healthy listener joins first, so the group surely has a member when start fails.
    @app.listener(failing, recoverer=BrokenStart(before=lambda: groups.wait_joined(group)))
    def handle_failing(msg: Message) -> None: ...

    @app.listener(healthy)
    def handle_healthy(msg: Message) -> None: ...

    app.start()
    try:
        with pytest.raises(RuntimeError, match="dead-letter producer refused to start"):
            app.join(60)
    finally:
        app.stop()
    groups.wait_left(group)
    nothing_left()


def test_recoverer_close_failure_still_commits_leaves_and_logs(
    kafka, make_topic, names, groups, nothing_left, caplog
) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, [f"m{i}" for i in range(5)])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    seen: list[str] = []

    # A long commit interval: only the stop commits, so a commit proves the stop went through.
    @app.listener(topic, recoverer=BrokenClose(), commit=Commit.interval(3600), name="orders")
    def handle(msg: Message) -> None:
        seen.append(msg.value)

    with caplog.at_level(logging.ERROR, logger="redrive"), running(app):
        wait_for(lambda: len(seen) == 5, what="five records handled")
        groups.wait_joined(group)
        # at most the owner's window at position 0: nothing handled is committed yet
        assert admin.committed_offsets(kafka, group, topic)[0] in (None, 0)
    assert admin.committed_offsets(kafka, group, topic) == {0: 5}
    groups.wait_left(group)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["orders: closing the recoverer failed: dead-letter producer flush timed out"]
    nothing_left()


def test_missing_retry_topics_at_start_close_every_consumer_created(
    kafka, make_topic, names, groups, nothing_left
) -> None:
    topic = make_topic()
    group = names.group()
    app = App(kafka, group, kafka=FAST)

    # Two consumers (the topic's and its retry topics'), then the missing retry topics fail.
    @app.listener(topic, retry_topics=RetryTopics(delays=(1.0,), auto_create=False))
    def handle(msg: Message) -> None: ...

    with pytest.raises(ConfigError, match=f"missing topics: {topic}-dlt, {topic}-retry"):
        app.run(handle_signals=False)
    # The error is let go first: its traceback holds the admin client that looked the topics
    # up, a client of its own whose threads would count.
    groups.wait_left(group)
    groups.wait_left(group + "-retry")
    nothing_left()


def test_failure_describing_a_listener_at_start_closes_every_consumer_created(
    kafka, make_topic, names, groups, nothing_left
) -> None:
    first, second = make_topic("first"), make_topic("second")
    group = names.group()
    app = App(kafka, group, kafka=FAST)

    @app.listener(first)
    def handle_first(msg: Message) -> None: ...

    # Its consumer and the first one's exist when the start-up log asks for describe().
    @app.listener(second, recoverer=BrokenDescribe())
    def handle_second(msg: Message) -> None: ...

    with pytest.raises(RuntimeError, match="describe failed: no producer settings") as caught:
        app.run(handle_signals=False)
    # Checked while the error, and so the frames of App.start, are still referenced: a
    # consumer nobody closed would still be alive here.
    groups.wait_left(group)
    nothing_left()
    del caught


def test_unreachable_broker_at_start_leaves_nothing_running(names, nothing_left) -> None:
    app = App("127.0.0.1:1", names.group(), connect_timeout=1.0)

    @app.listener(names.topic())
    def handle(msg: Message) -> None: ...

    pattern = r"no Kafka broker answered at 127\.0\.0\.1:1"
    with pytest.raises(KafkaUnavailable, match=pattern) as caught:
        app.run(handle_signals=False)
    nothing_left()  # checked while the error is still referenced (as above)
    del caught


def test_concurrent_recoverer_close_failure_still_commits_leaves_and_logs(
    kafka, make_topic, names, groups, nothing_left, caplog
) -> None:
    topic = make_topic(partitions=4)
    for p in range(4):
        admin.produce(kafka, topic, [f"p{p}-{i}" for i in range(5)], partition=p)
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    seen: list[str] = []
    lock = threading.Lock()

    @app.listener(
        topic, recoverer=BrokenClose(), commit=Commit.interval(3600), concurrency=4, name="orders"
    )
    def handle(msg: Message) -> None:
        with lock:
            seen.append(msg.value)

    with caplog.at_level(logging.ERROR, logger="redrive"), running(app):
        wait_for(lambda: len(seen) == 20, what="twenty records handled")
        groups.wait_joined(group)
        assert set(admin.committed_offsets(kafka, group, topic).values()) <= {None, 0}
    assert admin.committed_offsets(kafka, group, topic) == {p: 5 for p in range(4)}
    groups.wait_left(group)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["orders: closing the recoverer failed: dead-letter producer flush timed out"]
    nothing_left()
