"""The one header codec: every header name, encoder and decoder of dead letters, retry-topic
hops and replays, whoever reads or writes them.

Spring Kafka names a record's origin and cause with one of two families of names, and
redrive writes the one Spring writes on each path and reads both everywhere:

- ``DLT``, ``kafka_dlt-*`` (``KafkaHeaders.DLT_*``, written by Spring's
  ``DeadLetterPublishingRecoverer`` on its own): redrive's ``DeadLetter`` (dead letters after
  in-place or seek retries).
- ``CHAIN``, ``kafka_original-*`` and ``kafka_exception-*`` (``KafkaHeaders.ORIGINAL_*``,
  ``EXCEPTION_*``, written by Spring's retry-topic chain): redrive's ``ChainRecoverer`` on
  every retry hop and on the chain's dead letter. The group keeps its ``kafka_dlt-`` name
  (``KafkaHeaders.ORIGINAL_CONSUMER_GROUP`` is ``kafka_dlt-original-consumer-group``).

In both, the original partition is a 4-byte big-endian int, the offset and timestamp 8-byte
big-endian longs, the rest UTF-8 text. The exception headers follow Spring's
``DeadLetterRecordManager``: ``-fqcn`` is the exception handed to the recoverer,
``-cause-fqcn`` the exception the listener threw once Spring's own wrappers
(``ListenerExecutionFailedException``, ``TimestampedException``) are taken off, so for
redrive, which wraps nothing, both name the listener's exception. Its root cause (the end of
its ``__cause__`` chain) is redrive's own ``redrive_dlt-root-cause-fqcn`` / ``-message``.

A write replaces what an earlier write left (``REPLACED_PREFIXES``): both families and
redrive's ``redrive_dlt-*``, so a record that goes round again (replayed, then failed) carries
one current set in one family, never a pile-up and never a stale set of the other family.
The origin survives by value: a hop's origin is read from whichever family the record
carries and written again in the family of the new write.

Spring's retry-topic family, ``retry_topic-*`` (``RetryTopicHeaders``): ``retry_topic-attempts``
is the number of the *next* delivery attempt (2 on the first retry topic, one more than the
attempts made on a dead letter), written as a 4-byte int as Spring 4.1 writes it and read in
every form Spring has written (4-byte int, 1-byte unsigned, n-byte ``BigInteger``);
``-backoff-timestamp`` (due, epoch ms) and ``-original-timestamp`` are Java
``BigInteger.toByteArray()`` as Spring writes and reads them.

redrive's own: ``redrive_dlt-attempts`` (4-byte int), ``redrive_dlt-first-failure``
(8-byte long, epoch ms), ``redrive_dlt-interruptions`` (4-byte int, only when attempts
were interrupted: the process died while handling the record), ``redrive_dlt-root-cause-fqcn``
and ``-message`` (only when the exception has a cause) and ``redrive_replay-of``
(text, ``<dead-letter topic>/<partition>/<offset>`` a replayed record came from).

W3C trace context, ``traceparent`` (and ``tracestate``): a record's own is kept on every
write unless tracing is on, when ``with_trace`` replaces it with the context of the span
that wrote the record (see ``redrive.observe.tracing``).

Read a record's headers with ``decode`` (the known ones, to Python values)::

    >>> decode([(REDRIVE_ATTEMPTS, int32(3)), (RETRY_ATTEMPTS, b"\\x00\\x00\\x00\\x04")])
    {'redrive_dlt-attempts': 3, 'retry_topic-attempts': 4}
"""

from __future__ import annotations

import struct
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redrive.message import Message

Headers = Iterable[tuple[str, bytes | None]]

# -- Spring's dead-letter family (kafka_dlt-*) --------------------------------------------
DLT_ORIGINAL_TOPIC = "kafka_dlt-original-topic"
DLT_ORIGINAL_PARTITION = "kafka_dlt-original-partition"  # 4-byte int
DLT_ORIGINAL_OFFSET = "kafka_dlt-original-offset"  # 8-byte long
DLT_ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"  # 8-byte long, epoch ms
DLT_ORIGINAL_TIMESTAMP_TYPE = "kafka_dlt-original-timestamp-type"
DLT_ORIGINAL_CONSUMER_GROUP = "kafka_dlt-original-consumer-group"
DLT_EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
DLT_EXCEPTION_CAUSE_FQCN = "kafka_dlt-exception-cause-fqcn"
DLT_EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
DLT_EXCEPTION_STACKTRACE = "kafka_dlt-exception-stacktrace"

# -- Spring's retry-topic chain family (kafka_original-*, kafka_exception-*) --------------
ORIGINAL_TOPIC = "kafka_original-topic"
ORIGINAL_PARTITION = "kafka_original-partition"  # 4-byte int
ORIGINAL_OFFSET = "kafka_original-offset"  # 8-byte long
ORIGINAL_TIMESTAMP = "kafka_original-timestamp"  # 8-byte long, epoch ms
ORIGINAL_TIMESTAMP_TYPE = "kafka_original-timestamp-type"
ORIGINAL_CONSUMER_GROUP = DLT_ORIGINAL_CONSUMER_GROUP  # Spring keeps the kafka_dlt- name
EXCEPTION_FQCN = "kafka_exception-fqcn"
EXCEPTION_CAUSE_FQCN = "kafka_exception-cause-fqcn"
EXCEPTION_MESSAGE = "kafka_exception-message"
EXCEPTION_STACKTRACE = "kafka_exception-stacktrace"

# -- Spring's retry-topic headers (retry_topic-*) -----------------------------------------
RETRY_ATTEMPTS = "retry_topic-attempts"  # 4-byte int: the number of the next attempt
RETRY_BACKOFF_TIMESTAMP = "retry_topic-backoff-timestamp"  # BigInteger: due time, epoch ms
RETRY_ORIGINAL_TIMESTAMP = "retry_topic-original-timestamp"  # BigInteger: epoch ms
RETRY_PREFIX = "retry_topic-"

# -- redrive's own ------------------------------------------------------------------------
REDRIVE_ATTEMPTS = "redrive_dlt-attempts"  # 4-byte int: attempts made
REDRIVE_FIRST_FAILURE = "redrive_dlt-first-failure"  # 8-byte long, epoch ms
REDRIVE_INTERRUPTIONS = "redrive_dlt-interruptions"  # 4-byte int, only when > 0
REDRIVE_ROOT_CAUSE_FQCN = "redrive_dlt-root-cause-fqcn"  # only when the exception has a cause
REDRIVE_ROOT_CAUSE_MESSAGE = "redrive_dlt-root-cause-message"
REPLAY_OF = "redrive_replay-of"
"""Header on a replayed record: ``<dead-letter topic>/<partition>/<offset>`` it came from."""

# -- W3C trace context (OpenTelemetry's default propagator) --------------------------------
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

REPLACED_PREFIXES = ("kafka_dlt-", "kafka_original-", "kafka_exception-", "redrive_dlt-")
"""Headers a dead-letter write or a hop replaces rather than piles up, in either family (a
replayed record that fails again gets one fresh set)."""

SPRING_WRAPPERS = frozenset(
    {
        "org.springframework.kafka.listener.ListenerExecutionFailedException",
        "org.springframework.kafka.listener.TimestampedException",
    }
)
"""Spring's wrappers of a listener's exception: its ``-exception-fqcn`` names one of these
and ``-exception-cause-fqcn`` the exception the listener threw."""

STACKTRACE_LIMIT = 8192
MESSAGE_LIMIT = 4096
TIMESTAMP_TYPES = {0: "NO_TIMESTAMP_TYPE", 1: "CreateTime", 2: "LogAppendTime"}
_TIMESTAMP_TYPE_CODES = {v: k for k, v in TIMESTAMP_TYPES.items()}


@dataclass(frozen=True, slots=True)
class Family:
    """The names one publisher gives a record's origin and cause (Spring has two sets)."""

    original_topic: str
    original_partition: str  # 4-byte int
    original_offset: str  # 8-byte long
    original_timestamp: str  # 8-byte long
    original_timestamp_type: str
    original_consumer_group: str
    exception_fqcn: str
    exception_cause_fqcn: str
    exception_message: str
    exception_stacktrace: str


DLT = Family(
    DLT_ORIGINAL_TOPIC, DLT_ORIGINAL_PARTITION, DLT_ORIGINAL_OFFSET, DLT_ORIGINAL_TIMESTAMP,
    DLT_ORIGINAL_TIMESTAMP_TYPE, DLT_ORIGINAL_CONSUMER_GROUP, DLT_EXCEPTION_FQCN,
    DLT_EXCEPTION_CAUSE_FQCN, DLT_EXCEPTION_MESSAGE, DLT_EXCEPTION_STACKTRACE,
)  # fmt: skip
"""Spring's dead-letter family, ``kafka_dlt-*``: dead letters of in-place and seek retries."""

CHAIN = Family(
    ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET, ORIGINAL_TIMESTAMP,
    ORIGINAL_TIMESTAMP_TYPE, ORIGINAL_CONSUMER_GROUP, EXCEPTION_FQCN, EXCEPTION_CAUSE_FQCN,
    EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE,
)  # fmt: skip
"""Spring's retry-topic family, ``kafka_original-*`` / ``kafka_exception-*``: retry hops and
the dead letter at the end of a retry-topic chain."""

FAMILIES: tuple[Family, ...] = (DLT, CHAIN)
"""Every origin-and-cause family ``decode`` and ``origin_of`` read, the preferred first (a
record that carries both, which redrive never writes, is read by its ``kafka_dlt-*`` set:
the classic publisher adds it when a chain's record is dead-lettered once more)."""

_INT = frozenset(
    {REDRIVE_ATTEMPTS, REDRIVE_INTERRUPTIONS, *(f.original_partition for f in FAMILIES)}
)
_LONG = frozenset(
    {
        REDRIVE_FIRST_FAILURE,
        *(n for f in FAMILIES for n in (f.original_offset, f.original_timestamp)),
    }
)
_BIG_INT = frozenset({RETRY_BACKOFF_TIMESTAMP, RETRY_ORIGINAL_TIMESTAMP})
_TEXT_PREFIXES = (*REPLACED_PREFIXES, REPLAY_OF)


# -- encodings ----------------------------------------------------------------------------


def int32(n: int) -> bytes:
    """Java ``int``: 4 bytes, big-endian."""
    return struct.pack(">i", n)


def int64(n: int) -> bytes:
    """Java ``long``: 8 bytes, big-endian."""
    return struct.pack(">q", n)


def big_int(n: int) -> bytes:
    """Java ``BigInteger.valueOf(n).toByteArray()``."""
    return n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)


def from_big_int(b: bytes) -> int:
    """Java ``new BigInteger(b)``: big-endian two's complement of any length."""
    return int.from_bytes(b, "big", signed=True)


def from_attempts(b: bytes) -> int:
    """``retry_topic-attempts`` in every form Spring has written: a 4-byte int (Spring 4.1),
    one unsigned byte (read so by Spring 4.1 for compatibility), a ``BigInteger`` of any
    other length (older versions)."""
    if len(b) == 1:
        return b[0]
    return from_big_int(b)


# -- exceptions ---------------------------------------------------------------------------


def fqcn(exc_type: type[BaseException]) -> str:
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"


def _name(exc: BaseException) -> str:
    # An exception standing for one seen by another process carries that one's type name.
    name = getattr(exc, "fqcn", None)
    return name if isinstance(name, str) and name else fqcn(type(exc))


def root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def stacktrace(exc: BaseException, limit: int = STACKTRACE_LIMIT) -> str:
    # Long lines (huge exception messages) are cut first, so the frames and the exception
    # types survive the overall cap.
    line_limit = max(limit // 8, 80)
    text = "".join(
        line if len(line) <= line_limit else f"{line[:line_limit]}...(truncated)\n"
        for chunk in traceback.format_exception(exc)
        for line in chunk.splitlines(keepends=True)
    )
    if len(text) > limit:  # keep the end: the innermost frames and the message
        text = "...(truncated)\n" + text[-(limit - 16) :]
    return text


# -- writing ------------------------------------------------------------------------------


def dead_letter_headers(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    timestamp_type: int,
    group_id: str,
    exc: BaseException,
    attempts: int,
    first_failure: float,
    interruptions: int = 0,
    original: Headers = (),
    family: Family = DLT,
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter (or a retry hop): the ``original`` ones less those an
    earlier write left (either family, ``REPLACED_PREFIXES``), then origin and cause in
    ``family``'s names (``DLT`` for a dead letter, ``CHAIN`` on a retry-topic chain), then
    redrive's own.

    The exception headers are what Spring's publisher writes for an exception it does not
    wrap: ``-fqcn`` and ``-cause-fqcn`` both name `exc`, the message is ``str(exc)``; the end
    of its cause chain goes into ``redrive_dlt-root-cause-*`` when there is one.
    ``first_failure`` is in epoch seconds; ``interruptions`` is written only when > 0."""
    kept = [
        (k, v if v is not None else b"") for k, v in original if not k.startswith(REPLACED_PREFIXES)
    ]
    name = _name(exc)
    out = [
        *kept,
        (family.original_topic, topic.encode()),
        (family.original_partition, int32(partition)),
        (family.original_offset, int64(offset)),
        (family.original_timestamp, int64(timestamp)),
        (
            family.original_timestamp_type,
            TIMESTAMP_TYPES.get(timestamp_type, "CreateTime").encode(),
        ),
        (family.original_consumer_group, group_id.encode()),
        (family.exception_fqcn, name.encode()),
        (family.exception_cause_fqcn, name.encode()),
        (family.exception_message, str(exc).encode()[:MESSAGE_LIMIT]),
        (family.exception_stacktrace, stacktrace(exc).encode()),
        (REDRIVE_ATTEMPTS, int32(attempts)),
        (REDRIVE_FIRST_FAILURE, int64(int(first_failure * 1000))),
    ]
    cause = root_cause(exc)
    if cause is not exc:
        out.append((REDRIVE_ROOT_CAUSE_FQCN, _name(cause).encode()))
        out.append((REDRIVE_ROOT_CAUSE_MESSAGE, str(cause).encode()[:MESSAGE_LIMIT]))
    if interruptions > 0:
        out.append((REDRIVE_INTERRUPTIONS, int32(interruptions)))
    return out


def retry_headers(
    *, next_attempt: int, original_timestamp: int, due_ms: int | None
) -> list[tuple[str, bytes]]:
    """The ``retry_topic-*`` headers of a hop as Spring 4.1 writes them: the number the next
    attempt has (a 4-byte int), the origin's timestamp, and when the record is due (both
    ``BigInteger`` bytes, epoch ms; no due time on a dead letter)."""
    out = [
        (RETRY_ATTEMPTS, int32(next_attempt)),
        (RETRY_ORIGINAL_TIMESTAMP, big_int(original_timestamp)),
    ]
    if due_ms is not None:
        out.append((RETRY_BACKOFF_TIMESTAMP, big_int(due_ms)))
    return out


def with_trace(
    headers: Iterable[tuple[str, Any]], trace: Iterable[tuple[str, bytes]]
) -> list[tuple[str, Any]]:
    """`headers` with their trace context replaced by `trace` (``traceparent`` and what
    else the propagator writes) when `trace` holds any, so a retry hop, a dead letter or a
    replayed record carries the context of the span that wrote it, once; else `headers`."""
    trace = list(trace)
    if not trace:
        return list(headers)
    names = {TRACEPARENT, TRACESTATE, *(k for k, _ in trace)}
    return [(k, v) for k, v in headers if k not in names] + trace


def replay_marker(topic: str, partition: int, offset: int) -> tuple[str, bytes]:
    """The ``redrive_replay-of`` header of a record replayed from a dead letter."""
    return (REPLAY_OF, f"{topic}/{partition}/{offset}".encode())


# -- reading ------------------------------------------------------------------------------


def decode(headers: Headers) -> dict[str, Any]:
    """The dead-letter, retry-topic and redrive headers among `headers` as Python values
    (ints for the binary ones, text for the others; last one wins). Other headers, and
    binary ones of the wrong size, are left out or kept as text."""
    out: dict[str, Any] = {}
    for k, v in headers:
        if v is None:
            continue
        if k in _BIG_INT:
            if v:
                out[k] = from_big_int(v)
        elif k == RETRY_ATTEMPTS:
            if v:
                out[k] = from_attempts(v)
        elif k in _INT and len(v) == 4:
            out[k] = struct.unpack(">i", v)[0]
        elif k in _LONG and len(v) == 8:
            out[k] = struct.unpack(">q", v)[0]
        elif k.startswith(_TEXT_PREFIXES):
            out[k] = v.decode("utf-8", errors="replace")
    return out


def decode_all(headers: Headers) -> dict[str, Any]:
    """Every header: the known ones as ``decode`` gives them, the others as text, or hex
    (``0x...``) when they are not UTF-8, or None."""
    headers = list(headers)
    out: dict[str, Any] = {}
    for k, v in headers:
        if v is None:
            out[k] = None
            continue
        try:
            out[k] = v.decode("utf-8")
        except UnicodeDecodeError:
            out[k] = "0x" + v.hex()
    out.update(decode(headers))
    return out


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record first came from, before any retry topic."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int

    @classmethod
    def of(cls, msg: Message) -> Origin:
        """The record itself as an origin."""
        return cls(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.timestamp_type)


def origin_in(decoded: dict[str, Any], timestamp: int = -1) -> Origin | None:
    """The origin named in ``decode``d headers (the first family, of ``FAMILIES``, that
    names topic, partition and offset), or None. ``timestamp`` stands in for a missing one."""
    for f in FAMILIES:
        topic = decoded.get(f.original_topic)
        partition = decoded.get(f.original_partition)
        offset = decoded.get(f.original_offset)
        if isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int):
            ts = decoded.get(f.original_timestamp)
            return Origin(
                topic, partition, offset, ts if isinstance(ts, int) else timestamp,
                _TIMESTAMP_TYPE_CODES.get(str(decoded.get(f.original_timestamp_type)), 1),
            )  # fmt: skip
    return None


def origin_of(msg: Message) -> Origin:
    """The origin named by the record's origin headers (either family), else the record."""
    return origin_in(decode(msg.headers), msg.timestamp) or Origin.of(msg)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a record failed, as its exception headers tell it (either family, either writer).

    ``exception`` and ``message`` are the listener's own exception (Spring's
    ``ListenerExecutionFailedException`` taken off: its ``-cause-fqcn``, and the message
    after Spring's ``"<wrapper message>; "``); ``cause`` and ``cause_message`` the root of its
    cause chain when it has one (redrive's ``redrive_dlt-root-cause-*``, else the last
    ``Caused by:`` of a Java stack trace), else None. ``names`` holds every type name the
    headers mention, for filters."""

    exception: str | None
    message: str | None
    cause: str | None
    cause_message: str | None
    names: frozenset[str]


def failure_in(decoded: dict[str, Any]) -> Failure:
    """The ``Failure`` named in ``decode``d headers."""
    f = next((f for f in FAMILIES if decoded.get(f.exception_fqcn)), DLT)
    fqcn_ = _text(decoded.get(f.exception_fqcn))
    cause_fqcn = _text(decoded.get(f.exception_cause_fqcn))
    message = _text(decoded.get(f.exception_message))
    exception = fqcn_
    if fqcn_ in SPRING_WRAPPERS and cause_fqcn:
        exception = cause_fqcn
        if message is not None and "; " in message:
            message = message.split("; ", 1)[1]
    root, root_message = _text(decoded.get(REDRIVE_ROOT_CAUSE_FQCN)), None
    if root is not None:
        root_message = _text(decoded.get(REDRIVE_ROOT_CAUSE_MESSAGE))
    else:
        root, root_message = _java_root_cause(_text(decoded.get(f.exception_stacktrace)) or "")
        if root is None and cause_fqcn and cause_fqcn != fqcn_ and fqcn_ not in SPRING_WRAPPERS:
            root = cause_fqcn  # older redrive versions wrote the root cause here
    if root == exception and root_message in (None, message):
        root = root_message = None
    names = frozenset(n for n in (fqcn_, cause_fqcn, exception, root) if n)
    return Failure(exception, message, root, root_message, names)


def _text(v: object) -> str | None:
    return v if isinstance(v, str) and v else None


def _java_root_cause(trace: str) -> tuple[str | None, str | None]:
    """Type and message of the last ``Caused by:`` of a Java stack trace (None, None when it
    has none; a Python trace has none)."""
    last = None
    for line in trace.splitlines():
        if line.startswith("Caused by: "):
            last = line[len("Caused by: ") :]
    if last is None:
        return None, None
    name, sep, message = last.partition(": ")
    return name.strip(), (message if sep else None)


def due_ms(msg: Message) -> int | None:
    """When the record may be handled (epoch ms), or None when it carries no due time."""
    v = msg.header(RETRY_BACKOFF_TIMESTAMP)
    return from_big_int(v) if v else None


def attempts_of(msg: Message) -> int | None:
    """``retry_topic-attempts``: the number of this delivery attempt of a retry-topic record."""
    v = msg.header(RETRY_ATTEMPTS)
    return from_attempts(v) if v else None


def first_failure_of(msg: Message) -> float | None:
    """``redrive_dlt-first-failure`` in epoch seconds, or None."""
    v = decode(msg.headers).get(REDRIVE_FIRST_FAILURE)
    return v / 1000 if isinstance(v, int) else None
