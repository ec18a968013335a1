"""The driver: runs a sweep's trials on Ray workers, retries them, resumes and stops.

``run_sweep`` prepares the sweep folder (lock, ``sweep.json``, a changed spec refused),
reconciles the trial table with what storage holds (a ``result.json`` makes a trial final,
whatever ``state.json`` says; attempts of a killed driver cost nothing), then runs the
controller loop: launch PENDING trials on long-lived worker actors, fold their streamed
reports into the table, retry failed attempts from their latest checkpoint, replace dead
workers, and handle Ctrl-C. The driver is the only writer of ``state.json``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from service import cluster
from service.checkpoints import restore_point
from service.messages import (AttemptResult, Baseline, CheckpointRef, CheckpointSaved, Notice,
                              Outcome, Output, Report, TrialState)
from service.results import EXIT_ERRORS, EXIT_INTERRUPTED, EXIT_OK, SweepResult
from service.schedulers import Decision, Scheduler, Stop, is_scheduler_stop, make_scheduler
from service.search import FINISHED, Searcher, make_searcher
from service.spec import (Choice, Grid, Objective, RandInt, SpecError, SweepSpec, id_width,
                          spec_differences, sweep_record, trial_count, trial_id)
from service.storage import (Attempt, StorageError, SweepLock, SweepPaths, SweepState,
                             TrialPaths, TrialRecord, atomic_write_bytes, atomic_write_json,
                             check_storage, read_json)
from service.trial import (INTERRUPT, AttemptFence, MetricsSummary, StaleAttempt, TrialTask,
                           read_results, write_fence)



class SweepToRun(Protocol):
    """What the driver needs of a sweep (``service.sweep.Sweep`` is one; the facade sits
    above the driver, which never imports it): the validated spec, ``train``, where
    ``train`` lives, and an Optuna sampler instance if one was given."""

    spec: SweepSpec
    train: Callable
    source_file: str | None
    train_name: str
    sampler_instance: Any

    @property
    def name(self) -> str: ...

    @property
    def metric(self) -> str: ...

    @property
    def mode(self) -> str: ...

    @property
    def objective(self) -> Objective: ...

    def spec_hash(self) -> str: ...

POLL_INTERVAL = 0.2          # the loop's longest sleep; and how long a poll waits for a
                             # report (so a stop request is delivered at most this late)
LIVE_GAP = 0.02              # seconds between a worker's polls: a flood of reports comes
                             # in batches, yet each report arrives within a few gaps
STATE_INTERVAL = 0.5         # state.json: at most this often for state changes ...
METRICS_INTERVAL = 5.0       # ... and this often when only live metrics changed ...
STATE_SHARE = 0.05           # ... and never taking more than this share of the driver's time
PROGRESS_INTERVAL = 0.5


def run_sweep(sweep: SweepToRun, *, storage: str | None = None, address: str | None = "local",
              max_concurrent: int | None = None, restart: bool = False, resume: bool = False,
              retry_errored: bool = False, progress: bool | None = None,
              out: TextIO | None = None) -> SweepResult:
    """Run (or resume) ``sweep``; returns its result, whose ``exit_status`` is the exit
    status (DESIGN): 0 every trial TERMINATED or STOPPED, 1 some in ERROR, 130 interrupted
    (resumable).

    ``storage`` defaults to the spec's; ``address`` "local" starts an embedded Ray (None:
    ``RAY_ADDRESS`` or local); ``max_concurrent`` defaults to the spec's, else the cluster's
    CPUs / CPUs per trial. ``restart`` moves an existing folder aside and starts over;
    ``resume`` requires the folder to exist; ``retry_errored`` runs ERROR trials again.
    ``progress``: a live status line (default: when ``out`` is a terminal). A changed spec
    raises SpecError and a held lock LockHeld (a StorageError), both before Ray starts.
    """
    out = sys.stdout if out is None else out
    import ray
    if not ray.is_initialized():   # an unreachable cluster is refused before anything is written
        cluster.check_reachable(cluster.resolve_address(address))
    # Absolute: workers on other nodes (and the head's, joined) run in other folders.
    paths = SweepPaths(os.path.abspath(check_storage(storage or sweep.spec.storage)
                                       / sweep.name))
    # The topmost folder this launch creates, if any: removed again if the cluster refuses.
    created = next((p for p in reversed([paths.root, *paths.root.parents]) if not p.exists()),
                   None)
    lock = open_sweep_folder(sweep, paths, restart=restart, resume=resume, out=out)
    try:
        searcher = make_searcher(sweep.spec, sweep.sampler_instance)
        scheduler = make_scheduler(sweep.spec)
        load_plugin_state(paths.searcher_json, searcher)
        known = SweepState.load(paths.state_json).trials if paths.state_json.exists() else []
        searcher.setup(sweep.spec, paths.root, known)
        state, retry_base = reconcile(sweep, paths, searcher, retry_errored=retry_errored)
        load_plugin_state(paths.scheduler_json, scheduler)
        scheduler.setup(sweep.objective, [t.id for t in state.trials],
                        history=lambda trial_id: reported(paths.trial(trial_id)))
        state.save(paths.state_json)
        from service.events import write_experiment   # tensorboardX loads with a writer

        write_experiment(paths.root, hparam_domains(sweep), [sweep.metric])
        status = EXIT_OK
        runnable = [t for t in state.trials if t.state == TrialState.PENDING]
        if runnable or searcher.planned() is None:
            with cluster.connect(address) as info:
                try:
                    check_cluster(sweep, paths, info)
                except (SpecError, StorageError):
                    if created:   # refused before anything ran: leave no trace of this launch
                        shutil.rmtree(created, ignore_errors=True)
                    raise
                concurrency = max_concurrent or sweep.spec.max_concurrent or \
                    cluster.default_concurrency(info.cpus, sweep.spec.resources)
                controller = Controller(sweep, paths, state, retry_base, concurrency,
                                        Progress(out, progress, trial_count(sweep.spec),
                                                 sweep.objective),
                                        searcher=searcher, scheduler=scheduler)
                status = controller.run()
        result = SweepResult(paths.root, sweep.name, sweep.metric, sweep.mode, state.trials)
        if status != EXIT_INTERRUPTED:
            status = EXIT_ERRORS if result.errored else EXIT_OK
            print(result.table(), file=out, flush=True)
            report_errors(result)
        else:
            print(f"gradsweep: interrupted; running trials were checkpointed and stay PENDING. "
                  f"Resume with:\n  python -m service resume {shlex.quote(str(paths.root))}",
                  file=sys.stderr, flush=True)
        result.exit_status = status
        return result
    finally:
        lock.release()


def report_errors(result: SweepResult) -> None:
    """Name the trials that ended in ERROR and where their tracebacks are (on stderr), so a
    script that ignores ``exit_status`` still says that it failed."""
    errored = result.errored
    if not errored:
        return
    lines = [f"gradsweep: {len(errored)} trial(s) ended in ERROR: "
             f"{', '.join(t.id for t in errored)}; their tracebacks:"]
    lines += [f"  {result.paths.trial(t.id).error_txt}" for t in errored]
    print("\n".join(lines), file=sys.stderr, flush=True)


def check_cluster(sweep: SweepToRun, paths: SweepPaths, info: cluster.ClusterInfo) -> None:
    """Refuse, before any trial starts, a cluster where no node can run a trial or where a
    node cannot see the sweep's folder (storage must be shared by every node)."""
    problem = cluster.unplaceable(sweep.spec.resources)
    if problem and not (info.owned and not info.embedded):
        raise SpecError(f"resources: {problem}")
    if problem:   # a joined cluster may still grow (autoscaling): say so, wait
        print(f"gradsweep: warning: resources: {problem}", file=sys.stderr)
    if info.embedded:   # one node, started by this process: it sees what the driver sees
        return
    blind = cluster.nodes_not_seeing(paths.root)
    if blind:
        raise StorageError(f"storage {str(paths.root.parent)!r} is not visible from every node "
                           f"of the cluster ({'; '.join(blind)}); put it on a file system that "
                           "every node mounts at the same path")


# ----------------------------------------------------------------- the sweep folder

def open_sweep_folder(sweep: SweepToRun, paths: SweepPaths, *, restart: bool, resume: bool,
                      out: TextIO) -> SweepLock:
    """Lock the sweep's folder and make sure its ``sweep.json`` matches ``sweep``.

    A folder launched with another spec is refused (the message lists the differences)
    unless ``restart``, which renames it aside (never deleting it) and starts afresh.
    Returns the held lock.
    """
    if resume and not paths.sweep_json.is_file():
        raise StorageError(f"{str(paths.root)!r} is not a sweep folder (no sweep.json)")
    paths.root.mkdir(parents=True, exist_ok=True)
    lock = SweepLock(paths.lock)
    lock.acquire()
    try:
        record = read_json(paths.sweep_json, "sweep record") if paths.sweep_json.is_file() \
            else None
        if record is not None and restart:
            lock.release()
            aside = move_aside(paths.root)
            print(f"gradsweep: --restart: the previous sweep was moved to {aside}", file=out)
            paths.root.mkdir(parents=True)
            lock = SweepLock(paths.lock)
            lock.acquire()
            record = None
        new = sweep_record(sweep.spec, sweep.source_file, sweep.train_name)
        if record is None:
            atomic_write_json(paths.sweep_json, new)
        elif record.get("spec_hash") != new["spec_hash"]:
            diffs = spec_differences(record.get("spec") or {}, new["spec"])
            raise SpecError(f"sweep {sweep.name!r} in {str(paths.root)!r} was launched with "
                            f"another spec ({'; '.join(diffs) or 'its hash differs'}); "
                            "relaunch with --restart to start over (the old folder is kept "
                            "aside), or give the sweep another name")
        elif (record.get("source_file"), record.get("train_name")) != \
                (new["source_file"], new["train_name"]):
            # Same spec launched from another file: resume must find the file used now.
            atomic_write_json(paths.sweep_json, {**record, "source_file": new["source_file"],
                                                 "train_name": new["train_name"]})
    except BaseException:
        lock.release()
        raise
    return lock


def move_aside(root: Path) -> Path:
    """Rename a sweep folder to ``<name>.old-<time>`` (a fresh name) and return it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        aside = root.with_name(f"{root.name}.old-{stamp}" + (f"-{n}" if n else ""))
        if not aside.exists():
            root.rename(aside)
            return aside
    raise StorageError(f"cannot find a free name to move {str(root)!r} aside")


def read_result(paths: TrialPaths) -> dict | None:
    """A trial's completion record, or None when it has none (or an unreadable one)."""
    try:
        result = read_json(paths.result_json, "trial result")
    except StorageError:
        return None
    ok = isinstance(result, dict) and result.get("state") in ("TERMINATED", "STOPPED")
    return result if ok else None


def reconcile(sweep: SweepToRun, paths: SweepPaths, searcher: Searcher, *, retry_errored: bool
              ) -> tuple[SweepState, dict[str, int]]:
    """The trial table to run from: ``state.json`` corrected by what storage holds.

    The table holds the searcher's planned trials (grid and random search: all of them) and
    every trial suggested earlier. Trials with a completion record are final; final trials
    without one run again; RUNNING trials of a driver that died are PENDING again, their open
    attempt "driver-lost" (it costs no retry); ERROR trials run again with
    ``retry_errored`` (with a fresh budget: the returned dict gives the failures that no
    longer count); a pending trial's checkpoint is the latest one that verifies on storage.
    """
    old: dict[str, TrialRecord] = {}
    if paths.state_json.exists():
        old = SweepState.load(paths.state_json).by_id()
    planned = searcher.planned()
    if planned is None:   # suggested trials: those the table already holds, in order
        records = sorted(old.values(), key=lambda r: r.index)
    else:
        records = []
        for spec in planned:
            record = old.get(spec.id) or TrialRecord(spec.id, spec.index, spec.config)
            record.index, record.config = spec.index, spec.config
            records.append(record)
    trials, retry_base = [], {}
    now = time.time()
    for record in records:
        tpaths = paths.trial(record.id)
        for attempt in record.attempts:
            if attempt.outcome is None:
                # It ended unseen: count its time (time budgets) up to its last durable report.
                attempt.outcome = Outcome.DRIVER_LOST
                attempt.ended = max(attempt.started or now, last_report_time(tpaths) or 0.0)
        done = read_result(tpaths)
        if done is not None:
            record.state, record.reason = TrialState(done["state"]), done.get("reason")
            apply_summary(record, done)
            trials.append(record)
            continue
        if record.state == TrialState.ERROR and retry_errored:
            retry_base[record.id] = record.failed_attempts
            record.state = TrialState.PENDING
        elif record.state != TrialState.ERROR:
            record.state, record.reason = TrialState.PENDING, None
        set_checkpoint(record, restore_point(paths.root, tpaths.checkpoints,
                                             record.checkpoint_ref, note=_noting(record)))
        trials.append(record)
    return SweepState(sweep.name, sweep.spec_hash(), trials), retry_base


def _noting(record: TrialRecord) -> Callable[[str], None]:
    """Tell the driver's user about a trial's damaged checkpoint (on stderr)."""
    return lambda message: print(f"gradsweep: trial {record.id}: {message}", file=sys.stderr,
                                 flush=True)


def acted_on(verdict: tuple[int, str] | None, restore: CheckpointRef | None) -> str | None:
    """The reason of a scheduler's stop that the trial had acted on before its last attempt
    ended unseen: its restore point is past the step of the verdict (the stop checkpoint)."""
    if verdict is None or restore is None or restore.global_step <= verdict[0]:
        return None
    return verdict[1]


def set_checkpoint(record: TrialRecord, ref: CheckpointRef | None) -> None:
    """Make ``ref`` the trial's latest checkpoint in its row of state.json."""
    record.checkpoint_ref = ref
    record.checkpoint = None if ref is None else ref.path


def load_plugin_state(path: Path, plugin: Searcher | Scheduler) -> None:
    """Continue a searcher or scheduler from the state an earlier driver persisted."""
    if path.exists():
        plugin.load_state_dict(read_json(path, "saved state"))


def reported(paths: TrialPaths) -> list[tuple[int, dict]]:
    """A trial's durable reports, ``(step, metrics)`` in order (its results.jsonl)."""
    return [(row["step"], row.get("metrics", {})) for row in read_results(paths.results_jsonl)]


def last_report_time(paths: TrialPaths) -> float | None:
    """The time of the last intact line of a trial's results.jsonl, or None."""
    try:
        with open(paths.results_jsonl, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return float(json.loads(line)["time"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def apply_summary(record: TrialRecord, summary: dict) -> None:
    """Copy a worker's metrics summary (and checkpoint, when it names one) into a record."""
    record.last_step = summary.get("last_step")
    record.last_metrics = dict(summary.get("last_metrics") or {})
    record.best_metrics = dict(summary.get("best_metrics") or {})
    ref = CheckpointRef.from_dict(summary.get("checkpoint_ref"))
    if ref is not None:
        set_checkpoint(record, ref)
    elif summary.get("checkpoint"):
        record.checkpoint = summary["checkpoint"]


def hparam_domains(sweep: SweepToRun) -> dict[str, list | tuple]:
    """The HParams experiment's domains: the values of grids and choices, else intervals."""
    domains: dict[str, list | tuple] = {}
    for name, domain in sweep.spec.space.items():
        if isinstance(domain, (Grid, Choice)):
            domains[name] = list(domain.values)
        elif isinstance(domain, RandInt):
            domains[name] = (float(domain.low), float(domain.high - 1))
        else:
            domains[name] = (float(domain.low), float(domain.high))
    return domains


# ----------------------------------------------------------------- Ctrl-C

class Interrupts:
    """SIGINT (Ctrl-C) or SIGTERM (``kill``, ``ray job stop``, a service manager) while the
    controller runs: the first asks for a graceful stop, the second raises
    KeyboardInterrupt at once. Only installed from the main thread."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.count = 0
        self._previous: dict = {}

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1:
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            print(f"\ngradsweep: stopping ({name}): running trials checkpoint and stop (again "
                  "to exit at once)", file=sys.stderr, flush=True)
        elif self.count == 2:   # later ones wait for the state to be saved
            raise KeyboardInterrupt


# ----------------------------------------------------------------- progress

class Progress:
    """One status line rewritten in place on a terminal, a progress bar that updates in place
    in a notebook (tqdm's, where tqdm is installed), silent otherwise. Events (retries,
    errors) go to stderr either way."""

    def __init__(self, out: TextIO, enabled: bool | None, total: int, objective: Objective):
        self.out, self.total = out, total
        notebook = in_notebook()
        self.enabled = (_isatty(out) or notebook) if enabled is None else bool(enabled)
        self.objective = objective
        self.started = time.monotonic()
        self._shown = 0.0
        self._width = 0
        self.bar = notebook_bar(total) if self.enabled and notebook else None

    def update(self, trials: list[TrialRecord], running: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._shown < PROGRESS_INTERVAL):
            return
        self._shown = now
        done = sum(t.state in (TrialState.TERMINATED, TrialState.STOPPED) for t in trials)
        failed = sum(t.state == TrialState.ERROR for t in trials)
        values = [self.objective.value(t.best_metrics) for t in trials]
        values = [v for v in values if v is not None]
        best = f"{min(values, key=lambda v: self.objective.sign * v):.4g}" if values else "-"
        if self.bar is not None:
            self.bar.n = done + failed
            self.bar.set_postfix_str(f"{running} running, {failed} failed, best "
                                     f"{self.objective.metric} {best}", refresh=True)
            return
        elapsed = int(now - self.started)
        line = (f"{done}/{self.total} done, {running} running, {failed} failed, best "
                f"{self.objective.metric} {best}, {elapsed // 60:02d}:{elapsed % 60:02d} elapsed")
        self.out.write("\r" + line.ljust(self._width))
        self.out.flush()
        self._width = len(line)

    def event(self, message: str) -> None:
        self.clear()
        print(f"gradsweep: {message}", file=sys.stderr, flush=True)

    def output(self, trial_id: str, output: Output) -> None:
        """Lines a trial printed, each prefixed with the trial's id (as Ray Tune does), on
        the stream it printed them to; the status line is drawn again after them."""
        self.clear()
        stream = sys.stderr if output.stream == "stderr" else self.out
        stream.write("".join(f"({trial_id}) {line}\n" for line in output.text.split("\n")))
        stream.flush()

    def finish(self, trials: list[TrialRecord]) -> None:
        """The sweep's loop ended: a last update of a notebook's bar, a terminal's line
        cleared."""
        if self.bar is not None:
            self.update(trials, 0, force=True)
            self.bar.close()
        self.clear()

    def clear(self) -> None:
        if self.enabled and self._width:
            self.out.write("\r" + " " * self._width + "\r")
            self.out.flush()
            self._width = 0


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's shell for notebooks)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") \
        else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def notebook_bar(total: int):
    """tqdm's notebook progress bar (the ``notebook`` extra), or None without tqdm (the
    status line is then rewritten with a carriage return, which notebooks honour too)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="trial", desc="trials")


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ----------------------------------------------------------------- the controller

@dataclass
class Running:
    """One attempt in flight."""

    record: TrialRecord
    attempt: Attempt
    worker: Any
    summary: MetricsSummary
    stop: str | None = None
    stop_sent: bool = False
    decision: tuple[int, Decision] | None = None   # the answer to a waiting report
    poll_ref: Any = None
    next_poll: float = field(default_factory=lambda: time.monotonic() + LIVE_GAP)


class Controller:
    """The loop that runs a sweep's PENDING trials on a pool of worker actors."""

    def __init__(self, sweep: SweepToRun, paths: SweepPaths, state: SweepState,
                 retry_base: dict[str, int], concurrency: int, progress: Progress, *,
                 searcher: Searcher, scheduler: Scheduler):
        import ray

        from service.worker import worker_class

        self.ray = ray
        self.sweep, self.spec, self.paths, self.state = sweep, sweep.spec, paths, state
        self.retry_base = retry_base
        self.concurrency = max(1, int(concurrency))
        self.progress = progress
        self.searcher, self.scheduler = searcher, scheduler
        self.searching = True     # until the searcher says FINISHED
        self.queue = deque(t for t in state.trials if t.state == TrialState.PENDING)
        self.running: dict[Any, Running] = {}     # run ref -> attempt
        self.polls: dict[Any, Running] = {}       # poll ref -> attempt
        self.infos: dict[Any, Any] = {}           # info ref -> worker
        self.worker_info: dict[Any, dict] = {}    # worker -> {"node", "pid"}
        self.idle: list = []
        self.workers: list = []
        self.worker_cls = worker_class().options(**cluster.actor_options(self.spec.resources))
        self.worker_args = (self.spec.resources["cpu"],)
        self.train_ref = ray.put(sweep.train)
        self.interrupts = Interrupts()
        self.state_dirty = self.metrics_dirty = False
        self.saved_at = time.monotonic()
        self.save_seconds = 0.0    # how long the last save of state.json took

    # -- the loop

    def run(self) -> int:
        """Run until every trial is final (or Ctrl-C); returns EXIT_OK or EXIT_INTERRUPTED."""
        ray = self.ray
        with self.interrupts:
            try:
                while self.queue or self.running or self.searching:
                    if self.interrupts.count:
                        self.stop_all(INTERRUPT)
                        if not self.running:
                            break
                    else:
                        self.launch_ready()
                    self.send_polls()
                    refs = list(self.running) + list(self.polls) + list(self.infos)
                    ready, _ = ray.wait(refs, num_returns=1, timeout=self.sleep_time())
                    if ready:
                        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                    for ref in ready:
                        if ref in self.polls:
                            self.take_poll(ref)
                        elif ref in self.infos:
                            self.take_info(ref)
                    for ref in ready:
                        if ref in self.running:
                            self.finish(ref)
                    self.save_state()
                    self.progress.update(self.state.trials, len(self.running))
            except KeyboardInterrupt:
                self.abandon_running()
            finally:
                self.progress.finish(self.state.trials)
                self.save_state(force=True)
                self.release_workers()
        return EXIT_INTERRUPTED if self.interrupts.count else EXIT_OK

    def launch_ready(self) -> None:
        while len(self.running) < self.concurrency:
            record = self.queue.popleft() if self.queue else self.suggest()
            if record is None:
                break
            self.launch(record)
        # Nothing left to hand out: an idle worker would only hold its CPUs, which a retry's
        # new worker may be waiting for (a node was lost and the cluster is full).
        while self.idle and not self.queue:
            self.discard_worker(self.idle.pop())

    def suggest(self) -> TrialRecord | None:
        """A new trial from the searcher, in the table and persisted before it runs; None
        when the searcher has none now (or no more: then ``searching`` turns false)."""
        if not self.searching:
            return None
        index = len(self.state.trials)
        config = self.searcher.suggest(index)
        if config is FINISHED or (config is None and not self.running):
            self.searching = False    # nothing running could change its mind: it is done
            return None
        if config is None:
            return None
        width = id_width(trial_count(self.spec))
        record = TrialRecord(trial_id(index, width, config, self.spec.space), index, config)
        self.state.trials.append(record)
        self.persist(self.searcher, self.paths.searcher_json)
        self.state.save(self.paths.state_json)
        return record

    def persist(self, plugin: Searcher | Scheduler, path: Path, force: bool = False) -> None:
        """Write a searcher's or scheduler's state when it changed: before the decision or
        suggestion that changed it takes effect."""
        if plugin.dirty or force:
            atomic_write_json(path, plugin.state_dict())

    def launch(self, record: TrialRecord) -> None:
        """Start an attempt: name it in the trial's fence, then hand it to a worker."""
        attempt = Attempt(id=f"{record.index}.{len(record.attempts) + 1}-{uuid.uuid4().hex[:8]}",
                          started=time.time())
        write_fence(self.paths.trial(record.id), attempt.id)
        record.attempts.append(attempt)
        record.state, record.reason = TrialState.RUNNING, None
        spec = self.spec
        task = TrialTask(
            sweep_dir=str(self.paths.root), trial_id=record.id, config=record.config,
            attempt_id=attempt.id, metric=spec.metric, mode=spec.mode,
            stop=spec.stop.model_dump(exclude_none=True), on_nan=spec.on_nan,
            checkpoint_every=spec.checkpoint_every, keep_checkpoints=spec.keep_checkpoints,
            time_used=sum(a.ended - a.started for a in record.attempts
                          if a.ended is not None and a.started is not None),
            last_chance=self.failures(record) >= spec.max_failures,
            restore=(restore := self.restore_ref(record)),
            sync=self.scheduler.sync_steps(record.id),
            stopped=acted_on(self.scheduler.verdict(record.id), restore))
        worker = self.idle.pop() if self.idle else self.new_worker()
        info = self.worker_info.get(worker)
        if info is not None:
            attempt.node, attempt.pid = info["node"], info["pid"]
        ref = worker.run.remote(task, self.train_ref)
        summary = MetricsSummary(self.sweep.objective, record.last_step, record.last_metrics,
                                 record.best_metrics)
        self.running[ref] = Running(record, attempt, worker, summary)
        self.state_dirty = True

    def restore_ref(self, record: TrialRecord) -> CheckpointRef | None:
        """The checkpoint the attempt continues from (see :mod:`service.checkpoints`)."""
        tpaths = self.paths.trial(record.id)
        ref = restore_point(self.paths.root, tpaths.checkpoints, record.checkpoint_ref,
                            note=lambda message: self.progress.event(f"trial {record.id}: "
                                                                     f"{message}"))
        set_checkpoint(record, ref)
        return ref

    def new_worker(self):
        worker = self.worker_cls.remote(*self.worker_args)
        self.workers.append(worker)
        # Where it runs is known once it started; asked now, answered without blocking.
        self.infos[worker.info.remote()] = worker
        return worker

    def take_info(self, ref) -> None:
        worker = self.infos.pop(ref)
        try:
            info = self.worker_info[worker] = self.ray.get(ref)
        except self.ray.exceptions.RayError:
            return
        for run in self.running.values():
            if run.worker is worker and run.attempt.pid is None:
                run.attempt.node, run.attempt.pid = info["node"], info["pid"]
                self.state_dirty = True

    def failures(self, record: TrialRecord) -> int:
        """Failed attempts that count against max_failures (since --retry-errored)."""
        return record.failed_attempts - self.retry_base.get(record.id, 0)

    # -- live results

    def send_polls(self) -> None:
        """One poll in flight per running attempt, at most one per LIVE_GAP; each waits on
        the worker (up to POLL_INTERVAL) until there are live items to hand back."""
        now = time.monotonic()
        for run in self.running.values():
            due = now >= run.next_poll or (run.stop and not run.stop_sent) or \
                run.decision is not None
            if run.poll_ref is None and due:
                # The stop rides along with every poll until the attempt ends: a request
                # racing with the attempt's start is repeated.
                run.poll_ref = run.worker.poll.remote(run.attempt.id, run.stop, POLL_INTERVAL,
                                                      run.decision)
                run.stop_sent = run.stop is not None
                run.decision = None
                self.polls[run.poll_ref] = run

    def sleep_time(self) -> float:
        """How long the loop may wait for Ray: until the next poll is due, at most
        POLL_INTERVAL."""
        if any(run.decision is not None and run.poll_ref is None
               for run in self.running.values()):
            return 0.0
        waiting = [run.next_poll for run in self.running.values() if run.poll_ref is None]
        if not waiting:
            return POLL_INTERVAL
        return min(POLL_INTERVAL, max(0.0, min(waiting) - time.monotonic()))

    def take_poll(self, ref) -> None:
        run = self.polls.pop(ref)
        run.poll_ref, run.next_poll = None, time.monotonic() + LIVE_GAP
        try:
            items = self.ray.get(ref)
        except self.ray.exceptions.RayError:
            return  # the worker died: its run ref says so
        self.fold(run, items)

    def fold(self, run: Running, items: list) -> None:
        """Apply streamed items: reports (each one judged by the scheduler), checkpoints,
        notices and the attempt's cleaned baseline."""
        record, summary = run.record, run.summary
        for item in items:
            if isinstance(item, Report):
                summary.add(item.step, item.metrics)
                self.searcher.on_result(record.id, item.step, item.metrics)
                self.judge(run, item)
            elif isinstance(item, CheckpointSaved):
                set_checkpoint(record, item.ref)
            elif isinstance(item, Notice):   # e.g. a damaged checkpoint skipped at the start
                self.progress.event(f"trial {record.id}: {item.message}")
            elif isinstance(item, Output):
                self.progress.output(record.id, item)
            elif isinstance(item, Baseline):
                summary.last_step = item.summary["last_step"]
                summary.last_metrics = dict(item.summary["last_metrics"])
                summary.best_metrics = dict(item.summary["best_metrics"])
        if items:
            record.last_step = summary.last_step
            record.last_metrics = summary.last_metrics
            record.best_metrics = summary.best_metrics
            self.metrics_dirty = True

    def judge(self, run: Running, report: Report) -> None:
        """The scheduler's decision on a report, persisted before it takes effect: the
        answer to a waiting report goes with the next poll, a stop otherwise too."""
        decision = self.scheduler.on_result(run.record.id, report.step, report.metrics,
                                            sync=report.wait)
        self.persist(self.scheduler, self.paths.scheduler_json)
        if report.wait:
            run.decision = (report.step, decision)
        elif isinstance(decision, Stop) and run.stop in (None, INTERRUPT):
            run.stop = decision.reason

    # -- attempts ending

    def finish(self, ref) -> None:
        """Record how an attempt ended and decide what comes next for its trial."""
        ray = self.ray
        run = self.running.pop(ref)
        if run.poll_ref is not None:  # fold the last live items before the final ones
            self.polls.pop(run.poll_ref, None)
            try:
                self.fold(run, ray.get(run.poll_ref))
            except ray.exceptions.RayError:
                pass
            run.poll_ref = None
        if run.attempt.pid is None:  # a short attempt: where it ran is still on its way
            for info_ref, worker in list(self.infos.items()):
                if worker is run.worker:
                    self.take_info(info_ref)
            info = self.worker_info.get(run.worker)
            if info is not None:
                run.attempt.node, run.attempt.pid = info["node"], info["pid"]
        try:
            result: AttemptResult = ray.get(ref)
        except ray.exceptions.RayActorError as err:
            result = AttemptResult(Outcome.WORKER_DIED, error=f"the worker died: {err}")
            self.discard_worker(run.worker)
        except ray.exceptions.RayError as err:
            result = AttemptResult(Outcome.ERROR, error=str(err))
            self.discard_worker(run.worker)
        else:
            self.idle.append(run.worker)
            self.fold(run, result.items)
            if result.summary is not None:
                apply_summary(run.record, result.completion_record())
        record, attempt = run.record, run.attempt
        attempt.ended, attempt.outcome = time.time(), result.outcome
        self.state_dirty = True
        if result.outcome in (Outcome.FINISHED, Outcome.STOPPED):
            record.state, record.reason = result.state, result.reason
            if result.outcome == Outcome.STOPPED:
                self.progress.event(f"trial {record.id} STOPPED ({record.reason})")
            self.completed(record)
        elif result.outcome == Outcome.INTERRUPTED:
            record.state = TrialState.PENDING
        elif result.outcome == Outcome.STALE:  # another attempt took over: not ours to judge
            record.state = TrialState.PENDING
            self.queue.appendleft(record)
        else:
            self.failed(run, result)

    def completed(self, record: TrialRecord) -> None:
        """Tell the searcher and the scheduler that ``record`` reached a final state."""
        self.scheduler.on_complete(record.id, record.state)
        self.persist(self.scheduler, self.paths.scheduler_json)
        self.searcher.on_complete(record.id, record.state, record.last_metrics,
                                  pruned=is_scheduler_stop(record.reason))
        self.persist(self.searcher, self.paths.searcher_json)

    def failed(self, run: Running, result: AttemptResult) -> None:
        """A failed attempt: retry from the latest checkpoint, or ERROR when out of retries."""
        record, attempt = run.record, run.attempt
        paths = self.paths.trial(record.id)
        error = result.error or "unknown error"
        if result.outcome == Outcome.WORKER_DIED:
            record_worker_death(paths, attempt.id, error)
        failures = self.failures(record)
        last_line = error.strip().splitlines()[-1] if error.strip() else error
        if failures <= self.spec.max_failures:
            record.state = TrialState.PENDING
            self.queue.appendleft(record)
            self.progress.event(f"trial {record.id} failed (attempt {len(record.attempts)}, "
                                f"{failures} of {self.spec.max_failures} retries used): "
                                f"{last_line}; retrying from its latest checkpoint")
        else:
            record.state, record.reason = TrialState.ERROR, "error"
            if result.outcome == Outcome.WORKER_DIED:
                close_failed_run(paths, attempt.id)
            self.completed(record)
            self.progress.event(f"trial {record.id} ended in ERROR after {len(record.attempts)} "
                                f"attempt(s): {last_line} (see {paths.error_txt})")

    def discard_worker(self, worker) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        self.worker_info.pop(worker, None)
        try:
            self.ray.kill(worker)
        except Exception:  # noqa: BLE001 - it is gone already
            pass

    # -- stopping

    def stop_all(self, reason: str) -> None:
        """Ask every running attempt to stop (delivered by the next poll)."""
        for run in self.running.values():
            run.stop = reason

    def abandon_running(self) -> None:
        """Second Ctrl-C: leave running trials PENDING at once (their workers go with Ray);
        they resume from their latest checkpoints."""
        now = time.time()
        for run in self.running.values():
            run.attempt.ended, run.attempt.outcome = now, Outcome.INTERRUPTED
            run.record.state = TrialState.PENDING
        self.running.clear()
        self.polls.clear()
        self.infos.clear()
        self.interrupts.count = max(self.interrupts.count, 2)
        self.state_dirty = True

    def release_workers(self) -> None:
        for worker in self.workers:
            try:
                self.ray.kill(worker)
            except Exception:  # noqa: BLE001 - best effort: Ray may be going down
                pass
        self.workers.clear()
        self.idle.clear()

    # -- state.json

    def save_state(self, force: bool = False) -> None:
        """Write state.json when something changed, at a bounded rate (always if forced)."""
        now = time.monotonic()
        since = now - self.saved_at
        least = self.save_seconds / STATE_SHARE   # a big sweep's table takes a while to write
        due = (self.state_dirty and since >= max(STATE_INTERVAL, least)) or \
            (self.metrics_dirty and since >= max(METRICS_INTERVAL, least))
        if not (due or (force and (self.state_dirty or self.metrics_dirty))):
            return
        self.state.save(self.paths.state_json)
        self.saved_at = time.monotonic()
        self.save_seconds = self.saved_at - now
        self.state_dirty = self.metrics_dirty = False


# ----------------------------------------------------------------- a worker's death

def record_worker_death(paths: TrialPaths, attempt_id: str, error: str) -> None:
    """error.txt for an attempt whose worker died (it could not write its own)."""
    try:
        AttemptFence(paths.attempt_file, attempt_id)()
        atomic_write_bytes(paths.error_txt, f"attempt {attempt_id}\n{error}\n".encode())
    except (StaleAttempt, OSError):
        pass


def close_failed_run(paths: TrialPaths, attempt_id: str) -> None:
    """Mark the run FAILURE in TensorBoard for a trial whose last worker died."""
    from service.events import RunWriter

    try:
        with RunWriter(paths.dir, guard=AttemptFence(paths.attempt_file, attempt_id)) as writer:
            writer.text("status", "failure: the worker died", 0)
            writer.hparams_end("FAILURE", time.time())
    except (StaleAttempt, OSError):
        pass
