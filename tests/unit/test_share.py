"""Share listeners without a broker: the preview API redrive relies on is there in the
pinned versions, the options are checked at registration, and the failure engine's
broker-counted half answers accept / release / reject (D3: never reject before the
recoverer returned)."""

from __future__ import annotations

import confluent_kafka
import pytest

from redrive import App, BackOff, ConfigError, Message, Retry
from redrive.consumer.counted import CountedFailures
from redrive.consumer.spec import ListenerSpec
from redrive.errors import DeliveryLimitReached, DeserializationError
from redrive.events import EventBus
from redrive.recover.base import Call
from redrive.share import ShareGroup
from redrive.share.client import TESTED_WITH, installed_versions


def test_the_pinned_client_is_installed_and_has_the_preview_api_redrive_calls() -> None:
    assert installed_versions() == (TESTED_WITH["confluent-kafka"], TESTED_WITH["librdkafka"])
    for name in ("subscribe", "poll", "acknowledge", "commit_sync", "close"):
        assert callable(getattr(confluent_kafka.ShareConsumer, name))
    assert {"ACCEPT", "RELEASE", "REJECT"} <= set(confluent_kafka.AcknowledgeType.__members__)
    assert callable(confluent_kafka.Message.delivery_count)


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"consumers": 0}, "consumers"),
        ({"share_group": {"delivery_limit": 3}}, "share_group"),
        ({"kafka": {"share.acknowledgement.mode": "implicit"}}, "kafka:share.acknowledgement.mode"),
        ({"kafka": {"auto.offset.reset": "earliest"}}, "kafka:auto.offset.reset"),
    ],
)
def test_share_listener_options_are_checked_at_registration(
    kwargs: dict[str, object], setting: str
) -> None:
    app = App("127.0.0.1:1", "g")
    with pytest.raises(ConfigError) as err:
        app.share_listener("t", **kwargs)(lambda msg: None)  # type: ignore[arg-type]
    assert err.value.setting == setting


@pytest.mark.parametrize(
    ("group", "setting"),
    [
        ({"delivery_limit": 1}, "share_group.delivery_limit"),
        ({"lock_duration": 0}, "share_group.lock_duration"),
        ({"auto_offset_reset": "smallest"}, "share_group.auto_offset_reset"),
    ],
)
def test_share_group_settings_are_checked(group: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError) as err:
        ShareGroup(**group)  # type: ignore[arg-type]
    assert err.value.setting == setting


def engine(
    recover: Call, limit: int = 5, attempts: int = 10
) -> tuple[CountedFailures, list[float]]:
    spec = ListenerSpec(
        name="l", topics=("t",), group_id="g", handler=lambda m: None, batch=False,
        max_poll_records=10, key_deserializer=None, value_deserializer=None,
        commit=None,  # type: ignore[arg-type]
        retry=Retry(backoff=BackOff.fixed(1.0, max_attempts=attempts)), recoverer=recover,
    )  # fmt: skip
    slept: list[float] = []

    def sleep(seconds: float) -> bool:
        slept.append(seconds)
        return len(slept) < 5  # the listener stops during the fifth wait

    return CountedFailures(spec, EventBus(), limit, sleep), slept


def msg(attempt: int) -> Message:
    return Message("t", 0, 7, value=b"v", attempt=attempt)


def test_release_until_one_delivery_before_the_limit_then_recover_and_reject() -> None:
    recovered: list[int] = []
    failures, _ = engine(Call(lambda m, e: recovered.append(m.attempt)), limit=4)
    assert [failures.failed(msg(a), ConnectionError("down")) for a in (1, 2)] == ["release"] * 2
    assert failures.failed(msg(3), ConnectionError("down")) == "reject"
    assert recovered == [3]
    assert failures.failed(msg(1), KeyError("fatal")) == "reject"


def test_the_retry_attempts_cap_deliveries_below_the_limit() -> None:
    failures, _ = engine(Call(lambda m, e: None), limit=10, attempts=2)
    assert failures.failed(msg(1), ConnectionError()) == "release"
    assert failures.failed(msg(2), ConnectionError()) == "reject"


def test_a_record_delivered_at_the_limit_is_recovered_without_being_handled() -> None:
    seen: list[BaseException] = []
    failures, _ = engine(Call(lambda m, e: seen.append(e)), limit=5)
    assert failures.gate(msg(4)) is None
    assert failures.gate(msg(5)) == "reject"
    assert isinstance(seen[0], DeliveryLimitReached) and "limit is 5" in str(seen[0])


def test_d3_no_reject_while_the_dead_letter_write_fails() -> None:
    calls: list[int] = []

    def flaky(m: Message, e: BaseException) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("dead-letter topic unavailable")

    failures, slept = engine(Call(flaky))
    assert failures.failed(msg(1), KeyError("fatal")) == "reject"
    assert len(calls) == 3 and len(slept) == 2  # tried again in place, then confirmed


def test_d3_a_stop_while_the_dead_letter_write_fails_releases_the_record() -> None:
    def broken(m: Message, e: BaseException) -> None:
        raise OSError("dead-letter topic unavailable")

    failures, slept = engine(Call(broken))
    assert failures.failed(msg(1), KeyError("fatal")) == "release"
    assert len(slept) == 5


def test_f4_an_undecodable_record_is_recovered_without_being_handled() -> None:
    seen: list[BaseException] = []
    failures, _ = engine(Call(lambda m, e: seen.append(e)))
    bad = msg(1)
    bad.error = DeserializationError("t[0]@7 could not be decoded: JSONDecodeError")
    assert failures.gate(bad) == "reject"
    assert seen == [bad.error]
