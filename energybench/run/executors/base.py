"""What every executor shares: the protocol the runner drives, and the facts a row records about where it ran.

An executor decides *where* runs execute (STYLE.md: launchers, not
scenarios). It never writes results: it yields ``(spec, row)`` pairs as runs
finish and the runner, the one writer, appends them.

Energy counters do not know whose work they count. NVML's is per board, RAPL's
(CPU/RAM, via CodeCarbon) per machine. So each row says whether another run
was on its GPU or its machine at any moment of its life (:mod:`.occupancy`);
when one was, the row is flagged and warned, and its energy is not presented
as the run's own.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from energybench.results import RunResult
from energybench.run.executors.occupancy import Occupancy  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from energybench.run.plan import RunSpec


class Events(Protocol):
    """How an executor reports progress to the runner (thread-safe on the runner's side)."""

    def started(self, spec: RunSpec, where: str | None) -> None: ...

    def relay(self, spec: RunSpec, line: str) -> None: ...

    def note(self, message: str) -> None: ...


class Executor(Protocol):
    name: str

    def prepare(self, suite, n_runs: int) -> list[str]:
        """Check resources and start what is needed; raise ExecutorError before any run starts. Returns notes."""

    def run(self, specs: list[RunSpec], events: Events) -> Iterator[tuple[RunSpec, RunResult]]:
        """Execute ``specs``, yielding each row as its run finishes (in finishing order)."""

    def close(self) -> None: ...


def thread_env(threads: int | None) -> dict[str, str]:
    """Environment that caps a child's intra-op threads (honoured by child.py via torch.set_num_threads)."""
    if threads is None:
        return {}
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "ENERGYBENCH_NUM_THREADS": n}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def gpu_shared_warning(where: str, peak: int) -> str:
    return (f"GPU figures are shared: {peak} runs were on {where} at the same time (runs_per_gpu > 1); NVML's "
            "energy counter, power and utilization are per board, so this run's GPU energy includes the other "
            "runs' work and is not its own")


def host_shared_warning(host: str, peak: int) -> str:
    return (f"host figures are shared: {peak} runs were on {host} at the same time; CPU and RAM energy are "
            "counted for the whole machine, so they include the other runs' work, and wall times include "
            "contention")


def placed(row: RunResult, *, executor: str, host: str | None, gpu: dict | None, gpu_peak: int | None,
           host_peak: int | None, detail: dict[str, Any]) -> RunResult:
    """``row`` with where it ran: executor, host, gpu_assignment, the two sharing flags and their warnings.

    gpu_peak: most runs at once on its GPU (None: no GPU assigned); host_peak: most runs at once on its host
    (None: unknown, e.g. a Ray task lost with its node, which has no figures to share).
    """
    data = row.model_dump(mode="json")
    warnings = list(data.get("warnings") or [])
    gpu_shared = gpu_peak is not None and gpu_peak > 1
    if gpu_shared:
        label = f"GPU {gpu.get('index')} ({gpu.get('uuid')})" if gpu else "its GPU"
        warnings.append(gpu_shared_warning(label, gpu_peak))
    host_shared = host_peak is not None and host_peak > 1
    if host_shared:
        warnings.append(host_shared_warning(host or "its host", host_peak))
    data.update(executor=executor, host=host, gpu_assignment=gpu,
                gpu_shared_with_concurrent_runs=gpu_shared, host_shared_with_concurrent_runs=host_shared,
                executor_detail={**detail, "max_runs_on_gpu_at_once": gpu_peak, "max_runs_on_host_at_once": host_peak},
                warnings=warnings)
    return RunResult.model_validate(data)
