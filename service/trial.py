"""The trial context handed to ``train(config, trial)``, and one attempt's life on a worker.

One attempt of one trial, in order (DESIGN, "Service contracts in detail"):

1. The driver names the attempt in the trial's ``.attempt`` file (the fence) and sends a
   :class:`TrialTask` to a worker.
2. :func:`run_attempt` fixes the restore point: the trial's latest checkpoint that verifies
   (falling back past damaged ones). ``trial.restore(sess)`` loads exactly that one.
3. The run is cleaned when the trial first writes: events and ``results.jsonl`` lines at and
   above the restore step go (from 0 when ``train`` never called ``restore``), so a run never
   shows a step twice.
4. ``report`` writes scalars and a ``results.jsonl`` line and queues the point for the driver;
   ``checkpoint`` writes histograms, makes everything durable, then saves.
5. ``train`` returns (TERMINATED, ``result.json`` written first), stops on the service's
   request (STOPPED, or back to PENDING after Ctrl-C), or raises (``error.txt``; retried).

Every write first checks the fence, so a stale attempt (a worker that outlived its driver)
stops at its next write instead of mixing its files with the current attempt's.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import traceback
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from service.checkpoints import load_restore_point, saved_ref
from service.messages import (AttemptResult, Baseline, CheckpointRef, CheckpointSaved, Notice,
                              Outcome, Report, TrialState)
from service.schedulers import Decision, Stop, SyncSteps
from service.spec import Objective
from service.storage import SweepPaths, TrialPaths, atomic_write_bytes, atomic_write_json

CHECKPOINT_PREFIX = "ckpt"
HISTOGRAM_PREFIX = "variables/"    # the variables' histograms, apart from the metrics
HISTOGRAM_CHOICES = ("model", "all", "none")

# Why a trial stops (the ``reason`` recorded in state.json and shown as a text summary).
MAX_STEPS, EARLY_STOP, TIME_BUDGET, DIVERGED = "max-steps", "early-stop", "time-budget", "diverged"
INTERRUPT = "interrupt"  # Ctrl-C: not a final decision, the trial goes back to PENDING


class TrialStopped(Exception):
    """Raised by ``trial.report`` once the service decided to stop the trial.

    Let it propagate out of ``train``: the service catches it and records why (``reason``).
    """

    def __init__(self, reason: str):
        super().__init__(f"the service stopped this trial ({reason})")
        self.reason = reason


class StaleAttempt(RuntimeError):
    """This attempt is no longer the trial's current one: it must not write anything."""


@dataclass(frozen=True)
class TrialTask:
    """What the driver sends a worker for one attempt (plain data, cheap to pickle)."""

    sweep_dir: str
    trial_id: str
    config: dict
    attempt_id: str
    metric: str
    mode: str
    stop: dict = field(default_factory=dict)    # max_steps, time_budget_s, metric_threshold
    on_nan: str = "stop"
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    time_used: float = 0.0      # seconds this trial ran in earlier attempts (time budget)
    last_chance: bool = False   # a failure now makes the trial ERROR (hparams FAILURE)
    restore: CheckpointRef | None = None   # the checkpoint to continue from (driver's pick)
    sync: SyncSteps = SyncSteps()          # where report waits for the scheduler's decision
    stopped: str | None = None   # a verdict the trial had already acted on (its stop
                                 # checkpoint is ``restore``): finish as STOPPED, train nothing

    @property
    def paths(self) -> TrialPaths:
        return SweepPaths(self.sweep_dir).trial(self.trial_id)

    @property
    def objective(self) -> Objective:
        return Objective(self.metric, self.mode)


# ----------------------------------------------------------------- the fence

class AttemptFence:
    """Raises StaleAttempt unless the trial's ``.attempt`` file names this attempt.

    The driver replaces the file atomically (a new inode) when it starts another attempt,
    so one ``stat`` per write tells whether it changed; the content is read only then.
    """

    def __init__(self, path: Path, attempt_id: str):
        self.path, self.attempt_id = path, attempt_id
        self._seen: tuple | None = None

    def __call__(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StaleAttempt(f"attempt {self.attempt_id}: {self.path} is gone") from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._seen:
            return
        current = self.path.read_text().strip()
        if current != self.attempt_id:
            raise StaleAttempt(f"attempt {self.attempt_id} was superseded by {current!r}")
        self._seen = key


def write_fence(paths: TrialPaths, attempt_id: str) -> None:
    """Make ``attempt_id`` the trial's current attempt (the driver does this).

    Replaced atomically (a new inode, so one ``stat`` tells a worker) but not fsynced: the
    fence only has to hold among processes that are alive, and a driver writes a new one
    before every attempt it starts, so what a power cut makes of it never matters.
    """
    from engine.atomic import TempFile

    paths.dir.mkdir(parents=True, exist_ok=True)
    temp = TempFile(paths.attempt_file)
    temp.file.write(attempt_id.encode() + b"\n")
    temp.publish()


# ----------------------------------------------------------------- metrics

class MetricsSummary:
    """A trial's last step, its metrics (tags of one step merged, a later value wins) and the
    metrics of the step where the sweep's metric was best: ``{"step": s, **metrics}``.

    The worker folds its reports into one and the driver folds the streamed reports into
    another, with this same code.
    """

    def __init__(self, objective: Objective, last_step: int | None = None,
                 last_metrics: dict | None = None, best_metrics: dict | None = None):
        self.objective = objective
        self.last_step = last_step
        self.last_metrics = dict(last_metrics or {})
        self.best_metrics = dict(best_metrics or {})

    def add(self, step: int, values: dict) -> None:
        if step == self.last_step:
            self.last_metrics.update(values)
        else:
            self.last_step, self.last_metrics = step, dict(values)
        value = self.objective.value(self.last_metrics)
        if value is None:
            return
        best = self.objective.value(self.best_metrics)
        if best is None or self.objective.better(value, best) \
                or self.best_metrics.get("step") == step:
            self.best_metrics = {"step": step, **self.last_metrics}

    def to_dict(self) -> dict:
        return {"last_step": self.last_step, "last_metrics": self.last_metrics,
                "best_metrics": self.best_metrics}


class StopRules:
    """The spec's stop conditions, checked at every report.

    They are deterministic functions of what the trial reports (save the time budget), so
    they are applied right where the report happens: the trial then stops at exactly the
    same step whether or not the driver was interrupted and resumed in between.
    """

    def __init__(self, task: TrialTask):
        self.max_steps = task.stop.get("max_steps")
        budget = task.stop.get("time_budget_s")
        self.deadline = None if budget is None else time.monotonic() + budget - task.time_used
        self.threshold = task.stop.get("metric_threshold")
        self.objective = task.objective
        self.stop_on_nan = task.on_nan == "stop"

    def check(self, step: int, values: dict) -> str | None:
        """The reason to stop after this report, or None."""
        if self.stop_on_nan and not all(math.isfinite(v) for v in values.values()):
            return DIVERGED
        if self.threshold is not None:
            value = self.objective.value(values)
            if value is not None and not self.objective.better(self.threshold, value):
                return EARLY_STOP
        if self.max_steps is not None and step + 1 >= self.max_steps:
            return MAX_STEPS
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return TIME_BUDGET
        return None


# ----------------------------------------------------------------- results.jsonl

def read_results(path: Path) -> list[dict]:
    """The intact lines of ``results.jsonl`` (a torn last line from a crash is dropped)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def clean_results(path: Path, resume_step: int, summary: MetricsSummary) -> None:
    """Keep the lines of ``results.jsonl`` below ``resume_step`` (rewritten atomically when
    any go) and fold the kept ones into ``summary``."""
    rows = read_results(path)
    kept = [row for row in rows if row["step"] < resume_step]
    if len(kept) != len(rows) or (path.exists() and not kept):
        if kept:
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        else:
            path.unlink(missing_ok=True)
    for row in kept:
        summary.add(row["step"], row.get("metrics", {}))


# ----------------------------------------------------------------- checkpoints

def remove_leftovers(paths: TrialPaths) -> None:
    """Delete temporary files an earlier attempt left half-written (a killed worker's)."""
    for folder in (paths.dir, paths.checkpoints):
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            if name.startswith(".") and ".tmp" in name:
                try:
                    os.unlink(os.path.join(folder, name))
                except OSError:
                    pass


# ----------------------------------------------------------------- the context

def _as_step(step: Any, method: str) -> int:
    """``step`` as an int, or a ValueError naming ``trial.<method>``."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"trial.{method}: step must be an int >= 0, got {step!r}")
    return int(step)


def _as_metrics(step: Any, metrics: Any, named: dict) -> tuple[int, dict, dict]:
    """The step, the metrics ``{tag: float}`` and the histograms ``{tag: array}`` of a report.

    ``metrics`` is a dict of tag -> number, or what running an ``en.summary`` node returns
    (its scalars are metrics, its histograms are returned apart); ``named`` come last.
    """
    step = _as_step(step, "report")
    histograms: dict = {}
    if metrics is not None and not isinstance(metrics, dict):
        from engine.summary import Summaries   # only here: the dict path stays free

        if not isinstance(metrics, Summaries):
            raise TypeError(f"trial.report: metrics must be a dict of tag -> number or what "
                            f"sess.run of an en.summary node returns, got "
                            f"{type(metrics).__name__}")
        metrics, histograms = metrics.scalars, metrics.histograms
    merged = {**metrics, **named} if metrics else named
    if not merged and not histograms:
        raise ValueError(f"trial.report(step={step}): no metrics given")
    values = {}
    for tag, value in merged.items():
        try:
            values[tag] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"trial.report: metric {tag!r} must be a number, got "
                            f"{type(value).__name__} {value!r}") from None
    return step, values, histograms


class Trial:
    """The context ``train(config, trial)`` receives: report, checkpoint, restore, graph.

    ``trial.id``, ``trial.config`` and ``trial.dir`` (the run's folder) are there to read.
    """

    def __init__(self, task: TrialTask, live: deque | None = None):
        self.task = task
        self.id, self.config = task.trial_id, dict(task.config)
        self.paths = task.paths
        self.dir = self.paths.dir
        self.live = deque() if live is None else live   # LiveItems for the driver
        self.fence = AttemptFence(self.paths.attempt_file, task.attempt_id)
        self.summary = MetricsSummary(task.objective)
        self.rules = StopRules(task)
        self.started = time.time()
        self.stop_reason: str | None = None
        self.checkpoint_path: str | None = None
        self.checkpoint_ref: CheckpointRef | None = None
        self._armed = False          # a stop is pending: the next report raises
        self._writer = None           # the run's RunWriter, opened at the first write
        self._results = None
        self._pending: tuple[int, dict] | None = None   # scalars of the latest step
        self._graph: dict | None = None
        self._restored = False
        self._saver = None
        self._sync_steps = list(task.sync.steps)
        self._synced: int | None = None   # the last step a decision was waited for
        self._decisions: dict[int, Decision] = {}
        self._decided = threading.Condition()
        self.fence()
        self.restore_ref = task.restore
        self.restore_step = 0 if task.restore is None else task.restore.global_step

    # -- what train calls

    def report(self, step: int, metrics: Any = None, /, **named: float) -> None:
        """Record metrics at ``step``: ``report(step, loss=l)``, ``report(step,
        {"loss/val": l})`` or ``report(step, sess.run(merged))`` (an ``en.summary`` node's
        value: its scalars are metrics, its histograms TensorBoard histograms at ``step``).
        Metrics become TensorBoard scalars, a ``results.jsonl`` line, and the driver's live
        view; a report of histograms only writes them and nothing else. Raises
        :class:`TrialStopped` when the service asked the trial to stop."""
        if self._armed:
            raise TrialStopped(self.stop_reason)
        step, values, histograms = _as_metrics(step, metrics, named)
        self._open()
        for tag, array in histograms.items():
            self._writer.histogram(tag, array, step)     # checks the fence first
        if not values:   # histograms only: no metrics for results, the driver or stop rules
            return
        self._write_scalars(step, values)
        self._results.write(json.dumps({"step": step, "time": time.time(), "metrics": values})
                            + "\n")
        self.summary.add(step, values)
        wait = self.task.metric in values and self._sync_due(step)
        self.live.append(Report(step, values, wait))
        if wait:
            self._wait_for_decision(step)
        reason = self.rules.check(step, values)
        if reason is not None:
            self.request_stop(reason)
            if reason == DIVERGED:
                raise TrialStopped(reason)   # nothing worth checkpointing after a NaN
        # A stop asked for before or by this report: this step still counts (and can be
        # checkpointed, see should_checkpoint); the next report raises.
        self._armed = self.stop_reason is not None

    def should_checkpoint(self, step: int) -> bool:
        """True after every ``checkpoint_every`` steps, and once a stop was asked for (so
        Ctrl-C and early stops leave a fresh checkpoint, after which ``checkpoint`` raises
        :class:`TrialStopped`: the trial ends at that step)."""
        if self.stop_reason is not None:
            self._armed = True   # this step's checkpoint is the last
            return True
        return (step + 1) % self.task.checkpoint_every == 0

    def checkpoint(self, sess, step: int, *, histograms: str = "model") -> str:
        """Save ``sess`` after step ``step`` has run (global step ``step + 1``).

        Histograms of the variables are written at ``step``, tagged ``variables/<name>``
        (apart from the metrics): the model's trainable variables (``histograms="model"``,
        the default), the optimizer's slots too (``"all"``) or none (``"none"``). Everything
        reported so far is made durable before the checkpoint exists. Returns its path, or,
        when it is the checkpoint a stop asked for, raises :class:`TrialStopped` once saved.
        """
        from engine import Saver

        step = _as_step(step, "checkpoint")
        if histograms not in HISTOGRAM_CHOICES:
            raise ValueError(f"trial.checkpoint: histograms must be one of "
                             f"{', '.join(HISTOGRAM_CHOICES)}, got {histograms!r}")
        self._open()
        self.fence()
        nodes = sess.variable_nodes()
        for name, value in sess.variables(copy=False).items():
            trainable = getattr(nodes.get(name), "trainable", False)
            if value.dtype.kind == "f" and (histograms == "all" or
                                            histograms == "model" and trainable):
                self._writer.histogram(f"{HISTOGRAM_PREFIX}{name}", value, step)
        self._sync()
        self.fence()
        if self._saver is None:
            self._saver = Saver(max_to_keep=self.task.keep_checkpoints)
        self.paths.checkpoints.mkdir(parents=True, exist_ok=True)
        path = self._saver.save(sess, str(self.paths.checkpoints / CHECKPOINT_PREFIX),
                                global_step=step + 1)
        self.checkpoint_path = str(path)
        self.checkpoint_ref = saved_ref(path, self.task.sweep_dir)
        self.live.append(CheckpointSaved(self.checkpoint_ref))
        if self._armed:   # the checkpoint a stop asked for: nothing more to train
            raise TrialStopped(self.stop_reason)
        return str(path)

    def restore(self, sess) -> int:
        """Load the checkpoint the service chose when this attempt started into ``sess``;
        returns its global step (the next step to run), or 0 for a fresh trial."""

        if self._writer is not None:
            raise RuntimeError("trial.restore(sess) must be called before the first "
                               "report or checkpoint of an attempt")
        self._restored = True
        if self.restore_ref is None:
            return 0
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always")
            self.restore_ref = load_restore_point(sess, self.task.sweep_dir, self.restore_ref,
                                                  self.paths.checkpoints)
        for warning in skipped:   # a damaged checkpoint skipped: the driver's user is told too
            self.live.append(Notice(str(warning.message)))
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
        if self.restore_ref is None:   # nothing usable left: a fresh start
            self.restore_step = 0
            return 0
        self.restore_step = self.restore_ref.global_step
        self.checkpoint_ref = self.restore_ref
        self.checkpoint_path = os.path.join(self.task.sweep_dir, self.restore_ref.path)
        return self.restore_step

    def steps(self, sess, total: int, *, eval_every: int | None = None,
              histograms: str = "model"):
        """The training loop's steps, from where this trial continues up to ``total``:

            for step, evaluate in trial.steps(sess, STEPS, eval_every=100):
                sess.run(train_op, feed=...)
                if evaluate:
                    trial.report(step, loss=sess.run(loss, feed=...))

        Restores ``sess`` first (``trial.restore``) and starts at the restored step; after
        each step's body, checkpoints when ``should_checkpoint`` says so. ``evaluate`` is
        true every ``eval_every`` steps and at the last step (always without
        ``eval_every``). The loop ends early when the service stops the trial (its next
        report raises :class:`TrialStopped`, which ``train`` lets through). ``histograms``
        goes to :meth:`checkpoint`.
        """
        start = self.restore(sess)
        for step in range(start, total):
            yield step, eval_every is None or (step + 1) % eval_every == 0 or step == total - 1
            if self.should_checkpoint(step):
                self.checkpoint(sess, step, histograms=histograms)

    def adopt_restore_point(self) -> None:
        """Take the attempt's restore point as where the run continues from, without
        loading it (a trial that only has to be finished)."""
        self._restored = True
        if self.restore_ref is not None:
            self.checkpoint_ref = self.restore_ref
            self.checkpoint_path = os.path.join(self.task.sweep_dir, self.restore_ref.path)

    def log_graph(self, node) -> None:
        """Show the graph that computes ``node`` (or a list of nodes) in the Graphs tab."""
        from engine import graph_def

        self._graph = graph_def(node)
        if self._writer is not None:
            self.fence()
            self._writer.graph(self._graph)

    # -- decisions the scheduler makes at given steps

    def _sync_due(self, step: int) -> bool:
        """True when the report of ``step`` reaches a step where the scheduler decides
        (the first report of the sweep's metric at or past it: see ``SyncSteps``)."""
        due = False
        while self._sync_steps and self._sync_steps[0] <= step:
            self._sync_steps.pop(0)
            due = True
        every = self.task.sync.every
        if self._synced is None:
            self._synced = self.restore_step - 1
        if every and step > self._synced and (step + 1) // every > (self._synced + 1) // every:
            due = True
        if due:
            self._synced = step
        return due

    def _wait_for_decision(self, step: int) -> None:
        """Block until the driver's decision for ``step`` arrives (a Ctrl-C ends the wait:
        the stop it asks for wins). A superseded attempt stops waiting at once."""
        with self._decided:
            while step not in self._decisions and self.stop_reason != INTERRUPT:
                self._decided.wait(1.0)
                self.fence()
            decision = self._decisions.pop(step, None)
        if isinstance(decision, Stop):
            self.request_stop(decision.reason)

    def deliver(self, step: int, decision: Decision) -> None:
        """The scheduler's decision for the report of ``step`` (the poll's thread)."""
        with self._decided:
            self._decisions[step] = decision
            self._decided.notify_all()

    # -- what the service calls

    def request_stop(self, reason: str) -> None:
        """Ask the trial to stop (any thread): ``should_checkpoint`` turns true and the
        report after the next one raises. A final reason (early stop, time budget, max
        steps, diverged) replaces a Ctrl-C, never the other way round."""
        if self.stop_reason is None or self.stop_reason == INTERRUPT:
            self.stop_reason = reason
        with self._decided:   # a report waiting for a decision sees a Ctrl-C
            self._decided.notify_all()

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the sweep folder (how state.json names checkpoints)."""
        return os.path.relpath(path, self.task.sweep_dir)

    def _open(self) -> None:
        """Clean the run at the restore step (0 without restore) and open its writers."""
        if self._writer is not None:
            return
        resume = self.restore_step if self._restored else 0
        self.fence()
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.paths)
        if not self.paths.params_json.exists():
            atomic_write_json(self.paths.params_json, self.config)
        clean_results(self.paths.results_jsonl, resume, self.summary)
        self.live.append(Baseline(self.summary.to_dict()))
        from service.events import RunWriter   # tensorboardX loads with the first writer

        self._writer = RunWriter(self.dir, resume_step=resume, guard=self.fence)
        self._writer.hparams_start(self.config, group_name=self.id, start_time=self.started)
        if self._graph is not None:
            self._writer.graph(self._graph)
        self._results = open(self.paths.results_jsonl, "a", encoding="utf-8")
        self._results_synced = -1     # where results.jsonl was last fsynced

    def _write_scalars(self, step: int, values: dict) -> None:
        """Hold the scalars of the latest step until another step is reported (or a
        checkpoint, or the end): a step reported twice shows each tag once in TensorBoard,
        the later value winning, as DESIGN says."""
        pending = self._pending
        if pending is not None and pending[0] == step:
            pending[1].update(values)
            return
        self._flush_scalars()
        self._pending = (step, dict(values))

    def _flush_scalars(self) -> None:
        if self._pending is not None:
            step, values = self._pending
            self._pending = None
            self._writer.scalars(step, values)      # checks the fence first

    def _sync(self) -> None:
        self._flush_scalars()
        self._writer.sync()
        self._results.flush()
        end = self._results.tell()
        if end != self._results_synced:   # nothing written since the last fsync: none now
            os.fsync(self._results.fileno())
            self._results_synced = end

    def finish(self, status: str, reason: str | None) -> None:
        """Close the run with its hparams session end (``status``: SUCCESS or FAILURE) and,
        for a reason, a text summary; everything durable when it returns."""
        self._open()
        self.fence()
        if reason is not None:
            self._writer.text("status", f"{status.lower()}: {reason}", self.summary.last_step
                              or 0)
        self._writer.hparams_end(status, time.time())
        self._sync()

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._flush_scalars()
            except StaleAttempt:
                pass
        if self._results is not None:
            self._results.close()
            self._results = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# ----------------------------------------------------------------- one attempt

def is_final_stop(reason: str | None) -> bool:
    """A stop that ends the trial as STOPPED: any reason but Ctrl-C and the step budget."""
    return reason not in (None, INTERRUPT, MAX_STEPS)


def run_attempt(task: TrialTask, train: Callable, live: deque | None = None,
                on_start: Callable[[Trial], None] | None = None) -> AttemptResult:
    """Run ``train`` for one attempt; never raises for what ``train`` does.

    The result's outcome is FINISHED, STOPPED, INTERRUPTED, ERROR or STALE (a superseded
    attempt, whose result the driver ignores). ``on_start`` receives the context before
    ``train`` runs (the worker keeps it to deliver stop requests and decisions).
    """
    trial = None
    try:
        trial = Trial(task, live)
        if on_start is not None:
            on_start(trial)
        try:
            if task.stopped is not None:   # it stopped before a crash; only its end is missing
                trial.adopt_restore_point()
                raise TrialStopped(task.stopped)
            train(dict(task.config), trial)
            reason = trial.stop_reason if is_final_stop(trial.stop_reason) else None
        except TrialStopped as stop:
            if stop.reason == INTERRUPT:
                return _result(trial, Outcome.INTERRUPTED, TrialState.PENDING, None)
            reason = stop.reason if is_final_stop(stop.reason) else None
        outcome, state = (Outcome.STOPPED, TrialState.STOPPED) if reason is not None else \
            (Outcome.FINISHED, TrialState.TERMINATED)
        trial.finish("SUCCESS", reason)
        result = _result(trial, outcome, state, reason)
        # The completion record goes last: once it exists the trial is never run again.
        atomic_write_json(task.paths.result_json,
                          {"trial": task.trial_id, "attempt": task.attempt_id,
                           "ended": time.time(), **result.completion_record()})
        return result
    except StaleAttempt as err:
        return AttemptResult(Outcome.STALE, reason=str(err))
    except (Exception, SystemExit):  # noqa: BLE001 - any failure of train is the trial's
        return _failed(task, trial, traceback.format_exc())
    finally:
        if trial is not None:
            try:
                trial.close()
            except (OSError, ValueError):
                pass


def _result(trial: Trial, outcome: Outcome, state: TrialState, reason: str | None
            ) -> AttemptResult:
    return AttemptResult(outcome, state, reason, summary=trial.summary.to_dict(),
                         checkpoint=trial.checkpoint_ref)


def _failed(task: TrialTask, trial: Trial | None, text: str) -> AttemptResult:
    """Record a failed attempt: ``error.txt`` and, when no retry is left, hparams FAILURE."""
    fence = trial.fence if trial is not None else AttemptFence(task.paths.attempt_file,
                                                               task.attempt_id)
    try:
        fence()
        task.paths.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(task.paths.error_txt,
                           f"attempt {task.attempt_id}\n{text}".encode())
        if trial is not None and task.last_chance:
            trial.finish("FAILURE", "error")
    except StaleAttempt as err:
        return AttemptResult(Outcome.STALE, reason=str(err))
    except Exception:  # noqa: BLE001 - the original failure is what matters
        text += "\nwhile recording it:\n" + traceback.format_exc()
    if trial is None:
        return AttemptResult(Outcome.ERROR, TrialState.ERROR, "error", error=text)
    result = _result(trial, Outcome.ERROR, TrialState.ERROR, "error")
    result.error = text
    return result
