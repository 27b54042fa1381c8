"""The contiguous-commit tracker: the committed position never passes an unfinished record."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from redrive.consumer.offsets import OffsetTracker, PartitionOffsets
from redrive.message import TopicPartition

TP = TopicPartition("t", 0)


def test_in_order_completion_moves_the_position() -> None:
    p = PartitionOffsets()
    assert p.position() is None
    for o in range(3):
        p.deliver(o)
        assert p.position() == o
        p.finish(o)
        assert p.position() == o + 1


def test_out_of_order_completion_waits_for_the_gap() -> None:
    p = PartitionOffsets()
    for o in (5, 6, 7):
        p.deliver(o)
    p.finish(7)
    p.finish(6)
    assert p.position() == 5
    p.finish(5)
    assert p.position() == 8


def test_redelivery_after_a_rewind_forgets_what_lay_beyond() -> None:
    p = PartitionOffsets()
    for o in (0, 1, 2):
        p.deliver(o)
    p.finish(0)
    p.deliver(1)  # rewound to 1
    assert p.position() == 1
    p.finish(1)
    assert p.position() == 2


@given(
    n=st.integers(1, 40),
    data=st.data(),
)
def test_position_never_passes_an_unfinished_record(n: int, data: st.DataObject) -> None:
    tracker = OffsetTracker()
    base = data.draw(st.integers(0, 1000))
    offsets = list(range(base, base + n))
    for o in offsets:
        tracker.deliver(TP, o)
    order = data.draw(st.permutations(offsets))
    failed = set(data.draw(st.lists(st.sampled_from(offsets), max_size=3)))
    finished: set[int] = set()
    for o in order:
        if o in failed:
            continue
        tracker.finish(TP, o)
        finished.add(o)
        pos = tracker.positions()[TP]
        # every record before the position is finished, and the record at it is not
        assert all(x in finished for x in range(base, pos))
        assert pos == base + n or pos not in finished
    unfinished = [o for o in offsets if o not in finished]
    assert tracker.positions()[TP] == (min(unfinished) if unfinished else base + n)
