"""Where a plan's simulations run: local processes, a Ray cluster, or SLURM through submitit
(`plan.backend`). Each back end is a `map(fn, tasks)` in order over picklable, module-level
functions and plain-data tasks, so the rows a plan gets back, and its answer, do not depend on
where they ran. Ray and submitit are imported only when chosen (extras `ray` and `slurm`)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from sim.config.bounds import Choice, at_least, check
from sim.config.errors import ConfigError
from sim.output.progress import bar


class Backend(Choice):
    local = "local"  # a process pool of plan.workers on this machine
    ray = "ray"  # Ray tasks: a cluster at plan.ray_address, or a Ray started here with plan.workers CPUs
    submitit = "submitit"  # submitit jobs: SLURM array tasks, or local processes (plan.submitit.executor=local)


class SubmititExecutor(Choice):
    slurm = "slurm"
    local = "local"  # submitit's local executor: the SLURM code path without SLURM (tests, trying it out)


@dataclass
class SubmititConfig:
    """What each plan task asks SLURM for: one CPU and a few GB suffice (a simulation is one
    single-threaded process). The submitting process waits for every task."""

    executor: SubmititExecutor = SubmititExecutor.slurm
    folder: str | None = None  # job files and logs (default: .submitit/ in the plan's output directory)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    timeout_min: Annotated[int, at_least(1)] = 60
    cpus_per_task: Annotated[int, at_least(1)] = 1
    mem_gb: Annotated[int, at_least(1)] = 4
    array_parallelism: Annotated[int, at_least(1)] = 128


def validate_backend(backend: str, submitit: SubmititConfig) -> None:
    if backend not in Backend.names():
        raise ConfigError("plan.backend", backend, f"must be one of {', '.join(Backend.names())}")
    if submitit.executor not in SubmititExecutor.names():
        raise ConfigError(
            "plan.submitit.executor", submitit.executor, f"must be one of {', '.join(SubmititExecutor.names())}"
        )
    check(submitit, "plan.submitit")


class LocalMapper:
    """map() in order, over a process pool when workers > 1 (the pool lives for the whole plan)."""

    def __init__(self, workers: int):
        self.pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None

    def __call__(self, fn: Callable, tasks: list, tick: Callable[[], None] = lambda: None) -> list:
        results = map(fn, tasks) if self.pool is None or len(tasks) <= 1 else self.pool.map(fn, tasks)
        out = []
        for r in results:  # in order, as each finishes
            out.append(r)
            tick()
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


class RayMapper:
    """Each task one Ray task with one CPU. Connects to the cluster at `address` ("auto": the
    one RAY_ADDRESS names or a local head), or starts a Ray of `workers` CPUs here when None;
    a Ray it started is shut down at the end."""

    def __init__(self, address: str | None, workers: int):
        import ray

        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            kwargs: dict[str, Any] = {"address": address} if address else {"address": "local", "num_cpus": workers}
            ray.init(include_dashboard=False, log_to_driver=False, **kwargs)

    def __call__(self, fn: Callable, tasks: list, tick: Callable[[], None] = lambda: None) -> list:
        remote = self.ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(t) for t in tasks]
        out = []
        for ref in refs:  # in order, each as it is ready
            out.append(self.ray.get(ref))
            tick()
        return out

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


class SubmititMapper:
    """Each map() one submitit job array; the results come back in order. Fails with the first
    task's error, naming its log."""

    def __init__(self, s: SubmititConfig, folder: Path):
        import submitit

        self.executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=str(s.executor))
        params: dict[str, Any] = {
            "timeout_min": s.timeout_min,
            "cpus_per_task": s.cpus_per_task,
            "mem_gb": s.mem_gb,
            "slurm_array_parallelism": s.array_parallelism,
        }
        params.update({f"slurm_{k}": v for k in ("partition", "account", "qos") if (v := getattr(s, k))})
        self.executor.update_parameters(**params)

    def __call__(self, fn: Callable, tasks: list, tick: Callable[[], None] = lambda: None) -> list:
        if not tasks:
            return []
        out = []
        for job in self.executor.map_array(fn, tasks):  # in order, each as it ends
            out.append(job.result())
            tick()
        return out

    def close(self) -> None:
        pass


class Progress:
    """A progress bar `fleetsim-plan: LABEL` over a stage's simulations (`sim.output.progress`:
    on a terminal, once the stage has run a few seconds)."""

    def __init__(self, label: str, total: int):
        self.bar = bar(total, f"fleetsim-plan: {label}", "run") if label else None

    def tick(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Mapper:
    """The back end chosen by `backend`, as a context manager: `with Mapper(...) as m: m(fn, tasks)`."""

    def __init__(
        self,
        backend: str = "local",
        workers: int = 1,
        ray_address: str | None = None,
        submitit: SubmititConfig | None = None,
    ):
        self.backend = str(backend)
        self.impl: LocalMapper | RayMapper | SubmititMapper
        if self.backend == "ray":
            self.impl = RayMapper(ray_address, workers)
        elif self.backend == "submitit":
            s = submitit or SubmititConfig()
            self.impl = SubmititMapper(s, Path(s.folder or ".submitit").expanduser().absolute())
        else:
            self.impl = LocalMapper(workers)

    def __call__(self, fn: Callable, tasks: list, label: str = "") -> list:
        """fn over tasks, in order; with a label, a progress bar (`Progress`)."""
        progress = Progress(label, len(tasks))
        try:
            return self.impl(fn, tasks, progress.tick)
        finally:
            progress.close()

    def __enter__(self) -> Mapper:
        return self

    def __exit__(self, *exc) -> None:
        self.impl.close()
