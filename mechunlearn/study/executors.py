"""Executors: where runs execute. Both yield `RunOutcome`s as runs finish; the driver writes them.

* `LocalExecutor` runs one after another in this process (models loaded once, kept).
* `RayExecutor` runs on a Ray cluster: ``workers`` actors, each with its own model cache, one run
  at a time each. The cluster is ``address``, else ``$RAY_ADDRESS``, else a local instance
  started (and stopped) here with ``workers`` CPUs. Workers need mechunlearn installed and the
  models reachable under their ``$MECHUNLEARN_HOME`` (build them there first on a real cluster).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Iterator, Protocol, Sequence

from mechunlearn.study.run import ModelCache, RunOutcome, error_outcome, execute_run
from mechunlearn.study.spec import RunSpec

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Runs `RunSpec`s and yields their outcomes as they finish."""

    def map(self, runs: Sequence[RunSpec]) -> Iterator[RunOutcome]:
        """Outcomes in completion order."""

    def close(self) -> None:
        """Release workers (idempotent)."""


def _set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (if given); returns the previous count."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return previous


class LocalExecutor:
    """Runs in this process, one run at a time (``threads`` torch threads while it is open)."""

    def __init__(self, threads: int | None = None) -> None:
        self._previous_threads = _set_threads(threads)
        self.cache = ModelCache()

    def map(self, runs: Sequence[RunSpec]) -> Iterator[RunOutcome]:
        """Execute each run in turn."""
        for run in runs:
            yield execute_run(run, self.cache)

    def close(self) -> None:
        """Drop the loaded models and restore torch's thread count."""
        self.cache = ModelCache()
        _set_threads(self._previous_threads)


class StudyWorker:
    """A Ray actor: a model cache and `execute_run` (see `RayExecutor`)."""

    def __init__(self, threads: int | None) -> None:
        _set_threads(threads)
        self.cache = ModelCache()

    def run(self, run: RunSpec) -> RunOutcome:
        """Execute one run in this worker."""
        return execute_run(run, self.cache)


class RayExecutor:
    """Runs on Ray actors (``workers`` of them, one CPU and ``threads`` torch threads each)."""

    def __init__(
        self, workers: int = 2, *, address: str | None = None, threads: int | None = 1, object_store_mb: int = 256, gpus_per_worker: float = 0
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ModuleNotFoundError("the ray executor needs Ray: pip install 'ray==2.60.0'") from None
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.ray = ray
        self.workers = workers
        self.threads = threads
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._started = False
        self._actors: list = []
        if not ray.is_initialized():
            if self.address:
                log.info("connecting to the Ray cluster at %s", self.address)
                ray.init(address=self.address, log_to_driver=False)
            else:
                self._start_local(workers, object_store_mb)
                self._started = True
        # a study on CUDA asks Ray for a GPU per worker, so actors land on GPU nodes, one each
        self.gpus_per_worker = gpus_per_worker
        self._remote = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(StudyWorker)
        self._actors = [self._remote.remote(threads) for _ in range(workers)]

    def _start_local(self, workers: int, object_store_mb: int, attempts: int = 3) -> None:
        # Ray waits a fixed 30 s for its raylet to register; on a busy machine that can run out,
        # so the start is retried (each failure is logged).
        for attempt in range(1, attempts + 1):
            log.info("starting a local Ray instance with %d workers", workers)
            try:
                self.ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, object_store_memory=object_store_mb * 2**20)
                return
            except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception for this
                self.ray.shutdown()
                if "timed out during startup" not in str(err) or attempt == attempts:
                    raise
                log.warning("local Ray did not start in time (attempt %d of %d): %s; retrying", attempt, attempts, err)

    def map(self, runs: Sequence[RunSpec]) -> Iterator[RunOutcome]:
        """Dispatch runs to idle actors; yield each outcome as soon as it arrives."""
        ray = self.ray
        pending = deque(runs)
        idle = list(self._actors)
        inflight: dict = {}
        while pending or inflight:
            while pending and idle:
                actor, run = idle.pop(), pending.popleft()
                inflight[actor.run.remote(run)] = (actor, run)
            done, _ = ray.wait(list(inflight), num_returns=1)
            actor, run = inflight.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayError as err:
                # the worker itself died (e.g. out of memory): record the run, replace the worker
                outcome = error_outcome(run, err, repr(err), 0.0)
                self._actors.remove(actor)
                actor = self._remote.remote(self.threads)
                self._actors.append(actor)
            idle.append(actor)
            yield outcome

    def close(self) -> None:
        """Stop the actors, and the local Ray instance if this executor started it."""
        for actor in self._actors:
            self.ray.kill(actor)
        self._actors = []
        if self._started:
            self.ray.shutdown()
            self._started = False


def make_executor(
    name: str = "local", *, workers: int = 1, address: str | None = None, threads: int | None = None, gpus_per_worker: float = 0
) -> Executor:
    """``local`` or ``ray`` (``workers`` actors, each with ``gpus_per_worker`` GPUs; ``address``
    or ``$RAY_ADDRESS``, else local Ray)."""
    if name == "local":
        if workers != 1:
            raise ValueError("the local executor runs one run at a time; use --executor ray for --workers > 1")
        return LocalExecutor(threads)
    if name == "ray":
        return RayExecutor(workers, address=address, threads=threads if threads is not None else 1, gpus_per_worker=gpus_per_worker)
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
