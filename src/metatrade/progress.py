"""Progress of the library's long loops, for whoever listens (the command line's bars).

A long loop reports its stages::

    with progress.stage("meta-test", total=len(starts)) as step:
        for label in starts:
            ...
            step(label)  # one unit done; the label says which

Nothing is shown unless a listener is installed for the current context (``listen``), so
the library stays silent from Python, in tests and in Ray workers; ``metatrade evaluate``
and ``walkforward`` install rich bars on stderr when it is a terminal. A ``ContextVar``,
not a global, so concurrent callers (threads, tasks) each keep their own listener.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol


class Listener(Protocol):
    """What shows progress: a stage starts (returns a handle), advances, stops."""

    def start(self, description: str, total: int) -> Any: ...

    def advance(self, handle: Any, detail: str | None) -> None: ...

    def stop(self, handle: Any) -> None: ...


_LISTENER: ContextVar[Listener | None] = ContextVar("metatrade_progress", default=None)
Step = Callable[..., None]
"""``step(detail=None)``: one unit of the stage done (``detail``: which one, for the display)."""


def _ignore(detail: str | None = None) -> None:
    return None


@contextlib.contextmanager
def stage(description: str, total: int) -> Iterator[Step]:
    """Report a stage of ``total`` units to the listener, if any; yields its ``step``."""
    listener = _LISTENER.get()
    if listener is None:
        yield _ignore
        return
    handle = listener.start(description, total)

    def step(detail: str | None = None) -> None:
        listener.advance(handle, detail)

    try:
        yield step
    finally:
        listener.stop(handle)


@contextlib.contextmanager
def listen(listener: Listener | None) -> Iterator[None]:
    """Send the stages reported inside the block to ``listener`` (None: to nobody)."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)
