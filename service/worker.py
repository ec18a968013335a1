"""The Ray actor that runs trials: long-lived, one trial at a time, reused across trials.

The driver calls ``run`` (which blocks for a whole attempt) and, meanwhile, ``poll`` from a
second actor thread: ``poll`` hands back the reports queued since the last call (live
results) and delivers the driver's stop requests. A poll waits (up to a bound) until there is
something to hand back, so a report reaches the driver within one Ray call, and the driver
spaces its polls a little, so that under a flood of reports each call carries a batch.
Reporting costs the trial one deque append (and, when the poll is waiting, waking it).
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections import deque
from typing import Callable

from service.messages import AttemptResult, Output
from service.schedulers import Decision
from service.trial import AttemptFence, StaleAttempt, Trial, TrialTask, run_attempt


def blas_threads(cpus: float) -> int:
    """BLAS threads for a trial given ``cpus``: its whole CPUs, at least one."""
    return max(1, int(cpus))


def limit_blas_threads(threads: int) -> bool:
    """Make numpy's BLAS use ``threads`` threads in this process; False if unknown how.

    Ray sets OMP_NUM_THREADS for its workers, but numpy's BLAS has read its settings at
    import, before that; threadpoolctl changes the running library's thread count.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn and dev
        return False
    threadpool_limits(limits=threads, user_api="blas")
    return True


def blas_thread_counts() -> list[int]:
    """The thread count of each BLAS library loaded in this process (empty if unknown)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return []
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


class LiveItems:
    """The live items of the running attempt: ``append`` (the trial's thread) and ``drain``
    (the poll's thread) never lock each other out; ``wait`` sleeps until there are items."""

    def __init__(self):
        self._items: deque = deque()
        self._ready = threading.Event()

    def append(self, item) -> None:
        self._items.append(item)
        if not self._ready.is_set():   # drain clears it before it pops: no wake-up is lost
            self._ready.set()

    def drain(self) -> list:
        """Everything queued so far, oldest first (items appended meanwhile stay queued)."""
        self._ready.clear()
        items, popleft = [], self._items.popleft
        for _ in range(len(self._items)):   # popleft is atomic
            items.append(popleft())
        return items

    def wait(self, timeout: float) -> None:
        """Until an item is queued, ``wake`` is called, or ``timeout`` seconds passed."""
        if not self._items:
            self._ready.wait(timeout)

    def wake(self) -> None:
        self._ready.set()


class _Lines(io.TextIOBase):
    """A stream that appends what is written to the trial's ``stdout.txt`` (``copy``) and
    queues whole lines for the driver, which prints them prefixed with the trial id."""

    def __init__(self, name: str, live: LiveItems, copy: "_Copy"):
        self.name, self.live, self.copy = name, live, copy
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.copy.write(text)
        lines, newline, self._partial = (self._partial + text).rpartition("\n")
        if newline:
            self.live.append(Output(self.name, lines))
        return len(text)

    def flush(self) -> None:
        self.copy.flush()

    def close_line(self) -> None:
        """Hand on a last line printed without a newline."""
        if self._partial:
            self.live.append(Output(self.name, self._partial))
            self._partial = ""


class _Copy:
    """The trial's ``stdout.txt``, opened (for appending) at the first write, and only while
    the attempt is the trial's current one: a trial that prints nothing has no such file."""

    def __init__(self, task: TrialTask):
        self.task, self.file, self.refused = task, None, False

    def write(self, text: str) -> None:
        if self.file is None and not self.refused:
            paths = self.task.paths
            try:
                AttemptFence(paths.attempt_file, self.task.attempt_id)()
                paths.dir.mkdir(parents=True, exist_ok=True)
                self.file = open(paths.dir / "stdout.txt", "a", encoding="utf-8", buffering=1)
            except (StaleAttempt, OSError):
                self.refused = True   # the attempt's own checks say why it cannot run
        if self.file is not None:
            self.file.write(text)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class CapturedOutput:
    """While an attempt runs, what ``train`` prints goes to the trial's ``stdout.txt``
    (both streams, appended across attempts) and, line by line, to the driver (Ray's own
    forwarding of worker output is off)."""

    def __init__(self, task: TrialTask, live: LiveItems):
        self.copy = _Copy(task)
        self.streams = (_Lines("stdout", live, self.copy), _Lines("stderr", live, self.copy))

    def __enter__(self) -> "CapturedOutput":
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.streams
        return self

    def __exit__(self, *exc) -> None:
        sys.stdout, sys.stderr = self.saved
        for stream in self.streams:
            stream.close_line()
        self.copy.close()


class TrialWorker:
    """Runs one trial attempt at a time (wrapped by ``ray.remote`` in :func:`worker_class`)."""

    def __init__(self, cpus: float = 1.0):
        self.threads = blas_threads(cpus)
        limit_blas_threads(self.threads)
        self.live = LiveItems()
        # Held while an attempt's end is drained, so that a poll hands back its items
        # either before the run's last ones or not at all: the driver sees them in order.
        self._ending = threading.Lock()
        self.trial: Trial | None = None
        self.attempt_id: str | None = None
        self.pending_stop: str | None = None

    def info(self) -> dict:
        """Where this worker runs: node id and pid (recorded with each attempt)."""
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "blas_threads": blas_thread_counts()}

    def run(self, task: TrialTask, train: Callable) -> AttemptResult:
        """Run one attempt; returns its outcome with the live items not yet polled."""
        self.live.drain()
        self.trial, self.attempt_id, self.pending_stop = None, task.attempt_id, None
        try:
            with CapturedOutput(task, self.live):
                result = run_attempt(task, train, self.live, on_start=self._started)
        finally:
            with self._ending:
                self.trial, self.attempt_id = None, None
                result_items = self.live.drain()
            self.live.wake()   # a poll waiting for this attempt returns now
        result.items = result_items
        return result

    def _started(self, trial: Trial) -> None:
        self.trial = trial
        if self.pending_stop is not None:  # a stop that arrived before train started
            trial.request_stop(self.pending_stop)

    def poll(self, attempt_id: str, stop: str | None = None, wait: float = 0.0,
             decision: tuple[int, Decision] | None = None) -> list:
        """The live items queued by attempt ``attempt_id`` since the last poll, waiting up to
        ``wait`` seconds for one when there are none; ``stop`` (a reason) asks that attempt
        to stop; ``decision`` ``(step, decision)`` answers a report waiting at ``step``.
        Items of another attempt are never returned."""
        if attempt_id != self.attempt_id:
            return []
        if decision is not None and self.trial is not None:
            self.trial.deliver(*decision)
        if stop is not None:
            trial = self.trial
            if trial is None:
                self.pending_stop = stop
            else:
                trial.request_stop(stop)
        if wait > 0:
            self.live.wait(wait)
        with self._ending:
            if attempt_id != self.attempt_id:   # it ended: its last items went with run's result
                return []
            return self.live.drain()


def worker_class():
    """``TrialWorker`` as a Ray actor class: two threads, so ``poll`` runs beside ``run``."""
    import ray

    return ray.remote(max_concurrency=2)(TrialWorker)
