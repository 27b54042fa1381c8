"""``Message`` over a poll's records: what a handler reads is what the client returned, read
when asked for; a message built by hand behaves the same."""

from __future__ import annotations

import gc

import confluent_kafka as ck

from redrive import Message
from redrive.app import GC_THRESHOLD, tune_gc
from redrive.consumer.decode import Decoder
from redrive.message import TopicPartition


def _raw(topic: str, partition: int, offset: int, **kw: object) -> ck.Message:
    return ck.Message(topic=topic, partition=partition, offset=offset, **kw)


def test_a_wrapped_record_shows_the_clients_fields() -> None:
    raw = _raw("orders", 2, 7, key=b"k", value=b"v", headers=[("h", b"1"), ("h", b"2")],
               timestamp=(1, 1700000000000))  # fmt: skip
    (msg,), runs = Decoder(None, None).poll([raw])
    assert (msg.topic, msg.partition, msg.offset, msg.tp) == ("orders", 2, 7, ("orders", 2))
    assert (msg.key, msg.value, msg.raw_key, msg.raw_value) == (b"k", b"v", b"k", b"v")
    assert msg.headers == (("h", b"1"), ("h", b"2")) and msg.header("h") == b"2"
    assert (msg.timestamp, msg.timestamp_type, msg.attempt, msg.error) == (
        1700000000000,
        1,
        1,
        None,
    )
    assert runs == {TopicPartition("orders", 2): [7]}
    msg.value = {"decoded": True}  # what a deserializer does; the raw bytes stay
    assert msg.value == {"decoded": True} and msg.raw_value == b"v"
    assert "orders[2]@7" in repr(msg)


def test_one_topic_partition_per_partition_and_offsets_per_partition_in_poll_order() -> None:
    decode = Decoder(None, None)  # records of two topics with the same partition numbers
    raws = [_raw("a", 0, 1), _raw("a", 0, 2), _raw("b", 0, 5), _raw("a", 1, 9), _raw("a", 0, 3)]
    msgs, runs = decode.poll(raws)
    assert [(m.topic, m.partition, m.offset) for m in msgs] == [
        ("a", 0, 1), ("a", 0, 2), ("b", 0, 5), ("a", 1, 9), ("a", 0, 3)]  # fmt: skip
    assert msgs[0].tp is msgs[1].tp is msgs[4].tp and msgs[2].tp != msgs[0].tp
    assert runs == {("a", 0): [1, 2, 3], ("b", 0): [5], ("a", 1): [9]}
    again, _ = decode.poll([_raw("a", 0, 4)])
    assert again[0].tp is msgs[0].tp  # one TopicPartition per partition, across polls


def test_deserializers_decode_at_once_and_an_undecodable_record_carries_its_error() -> None:
    import json

    msgs, _ = Decoder(None, json.loads).poll([_raw("t", 0, 0, value=b'{"a": 1}'),
                                         _raw("t", 0, 1, value=b"{bad")])  # fmt: skip
    assert msgs[0].value == {"a": 1} and msgs[0].error is None
    assert msgs[1].value == b"{bad" and "t[0]@1 could not be decoded" in str(msgs[1].error)


def test_a_message_built_by_hand_keeps_what_it_was_given() -> None:
    msg = Message("t", 1, 4, "key", "value", raw_key=b"key", raw_value=b"value",
                  headers=(("x", b"y"),), timestamp=5, timestamp_type=2, attempt=3)  # fmt: skip
    assert (msg.key, msg.value, msg.raw_key, msg.raw_value) == ("key", "value", b"key", b"value")
    assert (msg.headers, msg.timestamp, msg.timestamp_type, msg.attempt) == (
        (("x", b"y"),), 5, 2, 3)  # fmt: skip
    bare = Message("t", 0, 0)
    assert (bare.key, bare.value, bare.raw_value, bare.headers, bare.timestamp) == (
        None, None, None, (), 0)  # fmt: skip


def test_the_gc_threshold_is_raised_only_when_nobody_chose_one() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's default
        tune_gc()
        assert gc.get_threshold() == (GC_THRESHOLD, 10, 10)
        gc.set_threshold(5000, 20, 20)  # the application's own choice
        tune_gc()
        assert gc.get_threshold() == (5000, 20, 20)
    finally:
        gc.set_threshold(*saved)
