"""Ctrl-C and SIGTERM stop a grid cleanly: children stopped, no half-written row, a resumable message.

The first SIGINT or SIGTERM raises :class:`StopRequested` in the main thread —
unless the runner is inside an append (:meth:`StopSignals.atomic`), in which
case it is raised right after the row is complete. The executor's ``finally``
terminates the children; the rows already appended stay, and the runs that
were cut short are simply pending for the next ``energybench run``. A second
signal exits at once (exit status 128 + signal), as users expect of a second
Ctrl-C; even then, a torn last line is cut off by the next append.

``StopRequested`` derives from ``BaseException`` so that the ``except
Exception`` guards that keep one broken run from losing the grid do not
swallow it.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from typing import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):
    def __init__(self, signum: int):
        self.signum = signum
        self.summary = None  # the runner attaches its GridSummary
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM


class StopSignals:
    """Installs the handlers while active (``with StopSignals() as stop:``); restores the previous ones after."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._critical = 0
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, frame) -> None:
        if self.signum is not None:  # the second signal: leave now
            os._exit(128 + signum)
        self.signum = signum
        if not self._critical:
            raise StopRequested(signum)

    def __enter__(self) -> "StopSignals":
        for s in HANDLED:
            self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A block a first signal must not cut (one append); the stop is raised when it ends."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self.signum is not None and not self._critical:
            raise StopRequested(self.signum)

