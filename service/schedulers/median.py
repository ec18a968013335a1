"""The median stopping rule (Ray Tune's ``MedianStoppingRule``; Golovin et al. 2017).

At every report with ``step >= grace_period``, a trial stops when its best value so far is
worse than the median of the other trials' running means (the mean of all the values each
reported up to that step), counting only the other trials that have reported at or past
that step, and only when there are at least ``min_samples`` of them.

The values it compares are rebuilt from the trials' ``results.jsonl`` when a driver starts;
its decisions are persisted before they take effect, so a resumed trial that was stopped
hears the same verdict again.
"""

from __future__ import annotations

import bisect
import math
import numpy as np
from service.schedulers.base import CONTINUE, Decision, Scheduler, Stop
from service.spec import MedianSpec


def median_stopping(grace_period: int, min_samples: int = 3) -> dict:
    """Stop a trial whose best value so far is worse than the median of the other trials'
    running means at the same step (from ``grace_period`` on, with at least ``min_samples``
    other trials to compare with). Validated with the rest of the spec."""
    return {"type": "median_stopping", "grace_period": grace_period,
            "min_samples": min_samples}


class _Series:
    """One trial's values of the metric by step: prefix sums give the mean up to any step."""

    def __init__(self):
        self.steps: list[int] = []
        self.sums: list[float] = []     # sums[i]: the sum of the first i + 1 values

    def add(self, step: int, value: float) -> None:
        if self.steps and step <= self.steps[-1]:   # a step reported again: the later wins
            cut = bisect.bisect_left(self.steps, step)
            del self.steps[cut:], self.sums[cut:]
        self.steps.append(step)
        self.sums.append((self.sums[-1] if self.sums else 0.0) + value)

    def mean_up_to(self, step: int) -> float | None:
        n = bisect.bisect_right(self.steps, step)
        return self.sums[n - 1] / n if n else None


class MedianStopping(Scheduler):
    """The rule of :class:`MedianSpec` (see the module's docstring)."""

    name = "median_stopping"

    def __init__(self, spec: MedianSpec):
        self.spec = spec
        self.series: dict[str, _Series] = {}
        self.best: dict[str, float] = {}          # lower is better (sign applied)
        self.stopped: dict[str, list] = {}        # trial id -> [step, reason] of its stop

    def setup(self, objective, trial_ids, history=None) -> None:
        super().setup(objective, trial_ids, history)
        if history is not None:
            for trial_id in trial_ids:
                for step, metrics in history(trial_id):
                    self._add(trial_id, step, metrics)

    def _add(self, trial_id: str, step: int, metrics: dict) -> float | None:
        value = metrics.get(self.objective.metric)
        if value is None or not math.isfinite(value):
            return None
        self.series.setdefault(trial_id, _Series()).add(step, value)
        score = self.objective.sign * value
        if trial_id not in self.best or score < self.best[trial_id]:
            self.best[trial_id] = score
        return value

    def on_result(self, trial_id: str, step: int, metrics: dict, *, sync: bool) -> Decision:
        if trial_id in self.stopped:
            return Stop(self.stopped[trial_id][1])
        if self._add(trial_id, step, metrics) is None or step < self.spec.grace_period:
            return CONTINUE
        means = [s.mean_up_to(step) for other, s in self.series.items()
                 if other != trial_id and s.steps[-1] >= step]
        means = [m for m in means if m is not None]    # none of its values is that early
        if len(means) < self.spec.min_samples:
            return CONTINUE
        median = float(np.median(means))
        sign, metric = self.objective.sign, self.objective.metric
        if self.best[trial_id] <= sign * median:
            return CONTINUE
        reason = (f"median stopping: step {step}: best {metric} {sign * self.best[trial_id]:.6g}"
                  f" worse than the median {median:.6g} of {len(means)} other trials' running "
                  "means")
        self.stopped[trial_id] = [step, reason]
        self.changed()
        return Stop(reason)

    def state(self) -> dict:
        return {"type": self.name, "stopped": dict(self.stopped)}

    def load_state_dict(self, state: dict) -> None:
        self.stopped = {t: list(v) for t, v in (state.get("stopped") or {}).items()}

    def verdict(self, trial_id: str) -> tuple[int, str] | None:
        found = self.stopped.get(trial_id)
        return None if found is None else (int(found[0]), found[1])
