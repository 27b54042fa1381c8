"""Exception classification (F5): retryable or fatal, by type, walking the cause chain.

Fatal errors skip the retries and go straight to the recoverer. The default fatal list holds
errors that trying again cannot fix: a record that cannot be decoded, a value of the wrong
type or shape, a missing attribute or key in the record, a programming error::

    Classifier()                                        # the defaults
    Classifier(fatal=(InvalidOrder,))                   # add your own fatal types
    Classifier(retryable=(ValueError,))                 # make a default-fatal type retryable
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from redrive.errors import BatchFailed, DeserializationError

DEFAULT_FATAL: tuple[type[BaseException], ...] = (
    DeserializationError,
    ValueError,  # includes UnicodeDecodeError and json.JSONDecodeError
    TypeError,
    KeyError,
    AttributeError,
    NotImplementedError,
)


@dataclass(frozen=True, slots=True)
class Classifier:
    """Decides whether an exception is worth retrying.

    The chain ``exc, exc.__cause__ (or __context__), ...`` is walked from the outside in; the
    first exception whose type matches ``retryable`` or a fatal list decides. ``retryable``
    wins over the fatal lists at the same link. Unknown exceptions are retryable.
    """

    fatal: tuple[type[BaseException], ...] = ()
    retryable: tuple[type[BaseException], ...] = ()
    default_fatal: tuple[type[BaseException], ...] = DEFAULT_FATAL

    def is_fatal(self, exc: BaseException) -> bool:
        for link in cause_chain(exc):
            if isinstance(link, BatchFailed):  # a signal, not a cause: look inside
                continue
            if self.retryable and isinstance(link, self.retryable):
                return False
            if isinstance(link, self.fatal) or isinstance(link, self.default_fatal):
                return True
        return False

    def describe(self) -> str:
        """One line for the start-up log."""
        names = [t.__name__ for t in (*self.fatal, *self.default_fatal)]
        text = f"fatal: {', '.join(names) or 'none'}"
        if self.retryable:
            text += f"; retryable: {', '.join(t.__name__ for t in self.retryable)}"
        return text


def cause_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then its ``__cause__`` (or unsuppressed ``__context__``), and so on; each
    exception once, so a cycle ends the walk."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
