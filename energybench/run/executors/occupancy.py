"""Who is on each shared resource (a GPU, a machine), and the most runs each one ever had beside it.

Energy counters do not know whose work they count: NVML's is per board,
RAPL's (CPU/RAM, via CodeCarbon) per machine. A run that had company on its
GPU or machine at any moment of its life has shared figures, and its row says
so. Standard library only: Ray's occupancy actor imports this in a worker
that must start fast.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Hashable


class Occupancy:
    """A run is counted with every run present on the same key while it is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._present: dict[Hashable, set[str]] = defaultdict(set)
        self._peak: dict[tuple[Hashable, str], int] = {}

    def enter(self, key: Hashable, who: str) -> None:
        with self._lock:
            here = self._present[key]
            here.add(who)
            for w in here:
                self._peak[(key, w)] = max(self._peak.get((key, w), 1), len(here))

    def leave(self, key: Hashable, who: str) -> int:
        """Remove ``who``; return the most runs (itself included) present at once while it was there."""
        with self._lock:
            self._present[key].discard(who)
            return self._peak.pop((key, who), 1)
