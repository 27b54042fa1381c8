"""The contiguous-commit tracker (C1) under random completion orders (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from redrive.consumer.offsets import OffsetTracker
from redrive.message import TopicPartition

TP = TopicPartition("t", 0)


@st.composite
def runs(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """(first offset, number delivered, order in which some of them finish)."""
    start = draw(st.integers(0, 1000))
    n = draw(st.integers(0, 60))
    order = draw(st.permutations(range(start, start + n)))
    finished = draw(st.integers(0, n))
    return start, n, list(order[:finished])


@given(runs())
@settings(max_examples=300, deadline=None)
def test_position_is_the_first_unfinished_offset(run: tuple[int, int, list[int]]) -> None:
    start, n, finish_order = run
    tracker = OffsetTracker()
    for offset in range(start, start + n):
        tracker.deliver(TP, offset)
    done: set[int] = set()
    last = start if n else None
    for offset in finish_order:
        tracker.finish(TP, offset)
        done.add(offset)
        pos = tracker.positions().get(TP)
        expected = next((o for o in range(start, start + n) if o not in done), start + n)
        assert pos == expected  # never past an unfinished record, never behind the prefix
        assert last is not None and pos >= last  # the position never goes back
        last = pos
    if n and len(done) == n:
        assert tracker.positions()[TP] == start + n


@given(runs(), st.data())
@settings(max_examples=200, deadline=None)
def test_interleaved_delivery_and_finishing(
    run: tuple[int, int, list[int]], data: st.DataObject
) -> None:
    """Records arrive in offset order while earlier ones finish in any order."""
    start, n, _ = run
    tracker = OffsetTracker()
    delivered: list[int] = []
    done: set[int] = set()
    for offset in range(start, start + n):
        tracker.deliver(TP, offset)
        delivered.append(offset)
        open_ = [o for o in delivered if o not in done]
        for o in data.draw(st.lists(st.sampled_from(open_), unique=True, max_size=3)):
            tracker.finish(TP, o)
            done.add(o)
        pos = tracker.positions()[TP]
        first_open = next((o for o in delivered if o not in done), delivered[-1] + 1)
        assert pos == first_open


def test_finishing_twice_or_unknown_offsets_changes_nothing() -> None:
    tracker = OffsetTracker()
    for offset in (5, 6, 7):
        tracker.deliver(TP, offset)
    tracker.finish(TP, 6)
    tracker.finish(TP, 6)
    tracker.finish(TP, 99)
    tracker.finish(TopicPartition("other", 0), 5)
    assert tracker.positions() == {TP: 5}
    tracker.finish(TP, 5)
    assert tracker.positions() == {TP: 7}


@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.data())
@settings(max_examples=200, deadline=None)
def test_runs_match_record_by_record(sizes: list[int], data: st.DataObject) -> None:
    """deliver_many / finish_many (the batch hot path) equal deliver / finish per record,
    also when a run is a redelivery after a rewind or finishes only part of what is open."""
    from redrive.message import Message

    one, many = OffsetTracker(), OffsetTracker()
    next_offset = 0
    for size in sizes:
        if data.draw(st.booleans()) and next_offset:  # a rewind: redeliver from earlier
            next_offset = data.draw(st.integers(0, next_offset - 1))
        msgs = [Message("t", 0, o) for o in range(next_offset, next_offset + size)]
        next_offset += size
        for m in msgs:
            one.deliver(m.tp, m.offset)
        many.deliver_many(msgs)
        assert one.positions() == many.positions()
        done = msgs[: data.draw(st.integers(0, size))]
        for m in done:
            one.finish(m.tp, m.offset)
        many.finish_many(done)
        assert one.positions() == many.positions()
