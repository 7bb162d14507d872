"""Executors: where runs execute. All yield `RunOutcome`s as runs finish; the driver writes them.

* `LocalExecutor` runs one after another in this process (models loaded once, kept).
* `ProcessExecutor` (``local`` with ``workers`` > 1) runs on worker processes of this machine
  (spawned; one torch thread each unless ``threads`` says otherwise; each its own model cache,
  one run at a time).
* `RayExecutor` runs on a Ray cluster: ``workers`` actors, each with its own model cache, one run
  at a time each. The cluster is ``address``, else ``$RAY_ADDRESS``, else a local instance
  started (and stopped) here with ``workers`` CPUs. Workers need mechunlearn installed and the
  models reachable under their ``$MECHUNLEARN_HOME`` (build them there first on a real cluster).

Processes and Ray share one dispatch loop (`dispatch`): idle workers take the next run, outcomes
come back in completion order, and a worker that dies (killed, out of memory) is replaced and its
run retried on another worker, up to `RETRIES` times; after that the run is recorded as failed
with the cause ``WorkerDied: ...`` and the study goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from multiprocessing.connection import wait as wait_connections
from typing import Any, Iterator, Protocol, Sequence

from mechunlearn.study.run import ModelCache, RunOutcome, error_outcome, execute_run
from mechunlearn.study.spec import RunSpec

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")

RETRIES = 2
"""How many times a run whose worker died is run again (on another worker) before it is recorded as failed."""


class WorkerDied(RuntimeError):
    """The worker process or actor running a run died (killed, crashed, out of memory)."""


class Executor(Protocol):
    """Runs `RunSpec`s and yields their outcomes as they finish."""

    def map(self, runs: Sequence[RunSpec]) -> Iterator[RunOutcome]:
        """Outcomes in completion order."""

    def close(self) -> None:
        """Release workers (idempotent)."""


class WorkerPool(Protocol):
    """Workers that `dispatch` drives; a worker is a slot number in ``range(size)``."""

    size: int

    def submit(self, slot: int, run: RunSpec) -> None:
        """Start ``run`` on the idle worker ``slot``."""

    def next_done(self, busy: Sequence[int]) -> tuple[int, RunOutcome | WorkerDied]:
        """Block until one of the ``busy`` workers is done: its outcome, or `WorkerDied`."""

    def replace(self, slot: int) -> None:
        """Start a fresh worker in ``slot`` (its old one died)."""


def dispatch(pool: WorkerPool, runs: Sequence[RunSpec], retries: int = RETRIES) -> Iterator[RunOutcome]:
    """Run ``runs`` on ``pool``'s workers; yield each outcome as soon as it arrives."""
    pending = deque((run, 1) for run in runs)
    idle = list(range(pool.size))
    busy: dict[int, tuple[RunSpec, int, float]] = {}
    while pending or busy:
        while pending and idle:
            slot = idle.pop(0)
            run, attempt = pending.popleft()
            pool.submit(slot, run)
            busy[slot] = (run, attempt, time.perf_counter())
        slot, result = pool.next_done(list(busy))
        run, attempt, started = busy.pop(slot)
        if isinstance(result, WorkerDied):
            pool.replace(slot)
            if attempt <= retries:
                log.warning("run %s (%s): %s; retrying it on another worker (attempt %d of %d)", run.run_id, run.label, result, attempt + 1, retries + 1)
                pending.appendleft((run, attempt + 1))
            else:
                err = WorkerDied(f"{result} (attempt {attempt} of {retries + 1}; the run is recorded as failed)")
                yield error_outcome(run, err, f"WorkerDied: {err}", time.perf_counter() - started)
        else:
            yield result
        idle.append(slot)


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


def _process_worker(conn, threads: int) -> None:
    """A worker process: receive `RunSpec`s, send back `RunOutcome`s, until it receives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it stops the workers
    _set_threads(threads)
    cache = ModelCache()
    while True:
        run = conn.recv()
        if run is None:
            return
        conn.send(execute_run(run, cache))


class ProcessExecutor:
    """Runs on ``workers`` processes of this machine (spawned), each with ``threads`` torch threads
    and its own model cache, one run at a time each."""

    def __init__(self, workers: int = 2, *, threads: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.size = workers
        self.threads = threads
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[Any, Any]] = [self._start() for _ in range(workers)]

    def _start(self) -> tuple[Any, Any]:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_process_worker, args=(child, self.threads), daemon=True, name="mechunlearn-study-worker")
        process.start()
        child.close()
        return process, parent

    def map(self, runs: Sequence[RunSpec]) -> Iterator[RunOutcome]:
        """Dispatch runs to idle workers; yield each outcome as soon as it arrives."""
        return dispatch(self, runs)

    def submit(self, slot: int, run: RunSpec) -> None:
        """Send ``run`` to the worker in ``slot``."""
        self._workers[slot][1].send(run)

    def next_done(self, busy: Sequence[int]) -> tuple[int, RunOutcome | WorkerDied]:
        """The first busy worker to send an outcome or to die."""
        by_handle = {}
        for slot in busy:
            process, conn = self._workers[slot]
            by_handle[conn] = by_handle[process.sentinel] = slot
        ready = wait_connections(list(by_handle))
        slot = by_handle[ready[0]]
        process, conn = self._workers[slot]
        try:
            if conn.poll():
                return slot, conn.recv()
        except (EOFError, OSError):
            pass
        process.join(timeout=10)
        return slot, WorkerDied(f"worker process {process.pid} died ({_exit_cause(process.exitcode)})")

    def replace(self, slot: int) -> None:
        """Start a fresh process in ``slot``."""
        process, conn = self._workers[slot]
        conn.close()
        if process.is_alive():
            process.kill()
        process.join(timeout=10)
        self._workers[slot] = self._start()

    def close(self) -> None:
        """Ask every worker to stop; kill those still running after a few seconds."""
        for process, conn in self._workers:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 5
        for process, conn in self._workers:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
            conn.close()
        self._workers = []


def _exit_cause(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running, not answering"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class StudyWorker:
    """A Ray actor: a model cache and `execute_run` (see `RayExecutor`)."""

    def __init__(self, threads: int | None) -> None:
        _set_threads(threads)
        self.cache = ModelCache()

    def run(self, run: RunSpec) -> RunOutcome:
        """Execute one run in this worker (its rows name the Ray node: ``ray-node:<id>``)."""
        import ray

        return execute_run(run, self.cache, worker=f"ray-node:{ray.get_runtime_context().get_node_id()}")


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
        self.size = workers
        self.threads = threads
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._started = False
        self._actors: list = []
        self._refs: dict[int, Any] = {}
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
        return dispatch(self, runs)

    def submit(self, slot: int, run: RunSpec) -> None:
        """Start ``run`` on the actor in ``slot``."""
        self._refs[slot] = self._actors[slot].run.remote(run)

    def next_done(self, busy: Sequence[int]) -> tuple[int, RunOutcome | WorkerDied]:
        """The first busy actor to finish; an actor that died comes back as `WorkerDied`."""
        ray = self.ray
        by_ref = {self._refs[slot]: slot for slot in busy}
        done, _ = ray.wait(list(by_ref), num_returns=1)
        slot = by_ref[done[0]]
        del self._refs[slot]
        try:
            return slot, ray.get(done[0])
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""  # Ray's messages run to a page
            return slot, WorkerDied(f"Ray worker died: {type(err).__name__}: {first}")

    def replace(self, slot: int) -> None:
        """Start a fresh actor in ``slot``."""
        self.ray.kill(self._actors[slot])
        self._actors[slot] = self._remote.remote(self.threads)

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
    """``local`` (in this process with one worker, else ``workers`` processes) or ``ray``
    (``workers`` actors, each with ``gpus_per_worker`` GPUs; ``address`` or ``$RAY_ADDRESS``,
    else local Ray)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if name == "local":
        if address is not None:
            raise ValueError("--address names a Ray cluster; use it with --executor ray")
        if workers == 1:
            return LocalExecutor(threads)
        return ProcessExecutor(workers, threads=threads if threads is not None else 1)
    if name == "ray":
        return RayExecutor(workers, address=address, threads=threads if threads is not None else 1, gpus_per_worker=gpus_per_worker)
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
