"""Deliberate mistakes: `mypy --strict` must report each at its line (tests/unit/test_typing.py).

Each line that must fail ends with the comment `# E:` and a fragment of the expected error.
This file is type-checked, never run.
"""

from __future__ import annotations

from redrive import App, BackOff, Commit, Message

app = App("127.0.0.1:9092", "g")


def handle(msg: Message) -> None: ...


def handle_batch(batch: list[Message]) -> None: ...


app.listener("t", max_poll_record=3)(handle)  # E: Unexpected keyword argument "max_poll_record"
app.listener("t", value_deserializer="jsn")(handle)  # E: Argument "value_deserializer" to "listener" of "App" has incompatible type
app.listener("t", commit="per_record")(handle)  # E: Argument "commit" to "listener" of "App" has incompatible type "str"
app.listener("t", retry=BackOff.fixed(1.0, max_attempts=3))(handle)  # E: Argument "retry" to "listener" of "App" has incompatible type "BackOff"
app.listener("t", recoverer="dlt")(handle)  # E: Argument "recoverer" to "listener" of "App" has incompatible type "str"
app.listener("t", ordering="offset")(handle)  # E: Argument "ordering" to "listener" of "App" has incompatible type
app.listener("t", max_in_flight="8")(handle)  # E: Argument "max_in_flight" to "listener" of "App" has incompatible type "str"
app.listener("t", kafka={"fetch.max.bytes": [1]})(handle)  # E: Dict entry 0 has incompatible type
app.listener("t", 3)(handle)  # E: Too many positional arguments for "listener" of "App"
app.listener("t")(handle_batch)  # E: Value of type variable "RecordHandlerT" of function cannot be "Callable[[list[Message]], None]"
app.batch_listener("t")(handle)  # E: Value of type variable "BatchHandlerT" of function cannot be "Callable[[Message], None]"
app.batch_listener("t", commit=Commit.per_record)(handle_batch)  # E: Argument "commit" to "batch_listener" of "App" has incompatible type


@app.listener("t")  # E: Value of type variable "RecordHandlerT" of function cannot be
def takes_a_batch(batch: list[Message]) -> None: ...


@app.batch_listener("t")  # E: Value of type variable "BatchHandlerT" of function cannot be
async def takes_a_record(msg: Message) -> None: ...


@app.listener("t")  # E: Value of type variable "RecordHandlerT" of function cannot be
def takes_two(msg: Message, other: int) -> None: ...
