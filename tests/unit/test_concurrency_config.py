"""Bad concurrency settings fail at registration, naming the setting."""

from __future__ import annotations

import pytest

from redrive import App, ConfigError


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "8"}, "concurrency"),
        ({"concurrency": 4, "ordering": "offset"}, "ordering"),
        ({"concurrency": 4, "max_in_flight": 0}, "max_in_flight"),
    ],
)
def test_invalid_concurrency_settings(options: dict[str, object], setting: str) -> None:
    app = App("127.0.0.1:1", "g")
    with pytest.raises(ConfigError) as err:
        app.listener("t", **options)
    assert err.value.setting == setting


def test_batch_listeners_take_no_concurrency() -> None:
    with pytest.raises(ConfigError, match="record listeners"):
        App("127.0.0.1:1", "g").batch_listener("t", concurrency=4)
