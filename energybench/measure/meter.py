"""One Meter drives every tracker over named windows (Zeus-style begin/end).

A tracker measures one kind of thing (wall clock, process memory, CUDA
memory, GPU energy, host energy) and knows nothing of training. The Meter
starts them together at ``begin_window(name)`` and collects their figures at
``end_window(name)``. Trackers that need a long-lived resource (a sampling
thread, CodeCarbon's tracker) start it once in ``start()`` for the whole run,
so a window costs only a timestamp and a few reads.

``reading(name)`` asks the trackers that can (wall clock, energy) for the
figures of an open window *so far* without ending it: the training loop's
periodic validations record cumulative cost this way (cost to target).
Trackers without a ``reading`` method (memory peaks) are simply left out.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Protocol

from energybench.measure.figures import Figures

WINDOWS = ("train", "eval", "inference")


class Tracker(Protocol):
    def start(self) -> None: ...
    def begin(self, window: str) -> None: ...
    def end(self, window: str) -> Figures: ...
    def stop(self) -> None: ...


class WallClock:
    """Wall time of a window, in seconds."""

    def __init__(self):
        self._t0: dict[str, float] = {}

    def start(self) -> None:
        pass

    def begin(self, window: str) -> None:
        self._t0[window] = time.perf_counter()

    def end(self, window: str) -> Figures:
        f = Figures()
        f.put("wall_s", time.perf_counter() - self._t0.pop(window))
        return f

    def reading(self, window: str) -> Figures:
        f = Figures()
        f.put("wall_s", time.perf_counter() - self._t0[window])
        return f

    def stop(self) -> None:
        pass


class WindowResult(dict):
    """The figures of one window: values plus ``provenance``, ``reasons`` and ``warnings``.

    ``warnings`` (a list of sentences, possibly empty) gathers what trackers put
    under ``Figures.values["warnings"]``: things that make the window's numbers
    less trustworthy without making any one of them null (a shared GPU, an
    uncertain device mapping).
    """

    def merge(self, figures: Figures) -> None:
        """Add figures measured outside the trackers (latency, step times) with their provenance."""
        self.update(figures.values)
        self.setdefault("provenance", {}).update(figures.provenance)
        self.setdefault("reasons", {}).update(figures.reasons)


class Meter:
    """Runs ``trackers`` over named windows; windows may nest but not repeat."""

    def __init__(self, trackers: list[Tracker] | None = None):
        self.trackers: list[Tracker] = [WallClock(), *(trackers or [])]
        self.results: dict[str, WindowResult] = {}
        self._open: set[str] = set()
        self._started = False

    def start(self) -> None:
        if not self._started:
            for t in self.trackers:
                t.start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            for t in reversed(self.trackers):
                t.stop()
            self._started = False

    def begin_window(self, name: str) -> None:
        if name in self._open:
            raise RuntimeError(f"window {name!r} is already open")
        self.start()
        self._open.add(name)
        for t in self.trackers:
            t.begin(name)

    def end_window(self, name: str) -> WindowResult:
        if name not in self._open:
            raise RuntimeError(f"window {name!r} was not begun")
        self._open.discard(name)
        figs = Figures()
        warnings: list[str] = []
        for t in reversed(self.trackers):
            f = t.end(name)
            warnings += [w for w in f.values.pop("warnings", None) or [] if w not in warnings]
            figs.update(f)
        res = WindowResult({**figs.as_dict(), "warnings": warnings})
        self.results[name] = res
        return res

    def reading(self, name: str) -> WindowResult:
        """Figures of the open window ``name`` so far; the window stays open and its marks untouched.

        Only trackers with a ``reading`` method contribute (wall clock, energy); each costs a few reads
        (one NVML sweep, one CodeCarbon measurement), so it is cheap enough for every periodic validation.
        """
        if name not in self._open:
            raise RuntimeError(f"window {name!r} is not open")
        figs = Figures()
        warnings: list[str] = []
        for t in reversed(self.trackers):
            read = getattr(t, "reading", None)
            if read is None:
                continue
            f = read(name)
            warnings += [w for w in f.values.pop("warnings", None) or [] if w not in warnings]
            figs.update(f)
        return WindowResult({**figs.as_dict(), "warnings": warnings})

    @contextmanager
    def window(self, name: str) -> Iterator[None]:
        self.begin_window(name)
        try:
            yield
        finally:
            self.end_window(name)

    def __enter__(self) -> "Meter":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
