"""Results of a sweep: the trials table, the best trial, and its checkpoint."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from service.checkpoints import restore_point
from service.messages import TrialState
from service.spec import Objective
from service.storage import StorageError, SweepPaths, SweepState, TrialRecord, read_json

# A sweep's exit status (DESIGN): every trial TERMINATED or STOPPED; some in ERROR; input
# refused before anything ran; interrupted (resumable).
EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class BestTrial:
    """What ``best --json`` prints."""

    trial: str
    config: dict
    metric: str
    mode: str
    value: float
    step: int | None
    checkpoint: str | None

    def to_dict(self) -> dict:
        return asdict(self)


class SweepResult:
    """A sweep's outcome, from the driver or from storage (:func:`load`)."""

    def __init__(self, root: str | os.PathLike, name: str, metric: str, mode: str,
                 trials: list[TrialRecord], exit_status: int | None = None):
        self.root = Path(root)
        self.paths = SweepPaths(self.root)
        self.name, self.metric, self.mode = name, metric, mode
        self.objective = Objective(metric, mode)
        self.trials = list(trials)
        self.exit_status = exit_status

    def trial_value(self, trial: TrialRecord, scope: str = "last") -> tuple[float | None,
                                                                           int | None]:
        """The metric's value for ``trial`` and the step it was reported at."""
        if scope == "last":
            value = self.objective.value(trial.last_metrics)
            return (value, trial.last_step) if value is not None else (None, None)
        value = self.objective.value(trial.best_metrics)
        return (value, trial.best_metrics.get("step")) if value is not None else (None, None)

    def best(self, scope: str = "last") -> BestTrial | None:
        """The best trial by the sweep's metric: its ``last`` reported value (Ray Tune's
        default) or the best value it ever reported (``all``). None if no trial reported it."""
        found = self._ranked_first(scope)
        if found is None:
            return None
        trial, value, step = found
        return BestTrial(trial.id, trial.config, self.metric, self.mode, value, step,
                         self.checkpoint_of(trial))

    @property
    def best_config(self) -> dict | None:
        # Only the ranking: finding (and verifying) the best trial's checkpoint reads it.
        found = self._ranked_first("last")
        return None if found is None else found[0].config

    def ranked(self, scope: str = "last") -> list[TrialRecord]:
        """The trials, best first by the sweep's metric (ties by index), those that never
        reported it last."""
        if scope not in ("last", "all"):
            raise ValueError(f"scope must be 'last' or 'all', got {scope!r}")

        def key(t):
            value, _ = self.trial_value(t, scope)
            return (value is None, self.objective.sign * value if value is not None else 0.0,
                    t.index)
        return sorted(self.trials, key=key)

    def _ranked_first(self, scope: str) -> tuple[TrialRecord, float, int | None] | None:
        """The best trial with its value and step (ties go to the lower index)."""
        ranked = self.ranked(scope)
        if not ranked or self.trial_value(ranked[0], scope)[0] is None:
            return None
        return (ranked[0], *self.trial_value(ranked[0], scope))

    def checkpoint_of(self, trial: TrialRecord) -> str | None:
        """The trial's latest valid checkpoint on storage (storage is trusted over state:
        only the one state.json names, unchanged since it was verified, is not read)."""
        ref = restore_point(self.root, self.paths.trial(trial.id).checkpoints,
                            trial.checkpoint_ref)
        return None if ref is None else str(self.root / ref.path)

    def restore_best(self, sess, scope: str = "last") -> int:
        """Load the best trial's latest checkpoint into ``sess``; returns its global step."""
        from engine import Saver
        best = self.best(scope)
        if best is None or best.checkpoint is None:
            raise StorageError(f"sweep {self.name!r} has no checkpoint of a best trial")
        return Saver().restore(sess, best.checkpoint)

    @property
    def errored(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == TrialState.ERROR]

    def counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in TrialState}
        for t in self.trials:
            counts[t.state.value] += 1
        return counts

    def table(self, scope: str = "last") -> str:
        """The trials as a text table, sorted by the metric (best first, unreported last);
        the step is the one the value shown was reported at (the last step without one)."""
        rows = [("trial", "state", self.metric, "step", "attempts", "reason")]
        for t in self.ranked(scope):
            value, step = self.trial_value(t, scope)
            if step is None:
                step = t.last_step
            rows.append((t.id, t.state.value, "-" if value is None else f"{value:.6g}",
                         "-" if step is None else str(step),
                         str(len(t.attempts)), t.reason or ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                         for r in rows)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k.lower()} {v}" for k, v in self.counts().items() if v)
        return f"<SweepResult {self.name!r}: {counts}>"


def load(path: str | os.PathLike) -> SweepResult:
    """The result of a sweep on disk (its folder, e.g. ``logs/triangle``)."""
    paths = SweepPaths(path)
    if not paths.root.is_dir() or not paths.sweep_json.exists():
        raise StorageError(f"{str(paths.root)!r} is not a sweep folder (no sweep.json)")
    meta = read_json(paths.sweep_json, "sweep record")
    try:
        spec = meta["spec"]
        name, metric, mode = spec["name"], spec["metric"], spec["mode"]
    except (KeyError, TypeError):
        raise StorageError(f"sweep record {str(paths.sweep_json)!r} is corrupt") from None
    trials = SweepState.load(paths.state_json).trials if paths.state_json.exists() else []
    return SweepResult(paths.root, name, metric, mode, trials)
