"""ASHA: asynchronous successive halving, and asynchronous Hyperband with ``brackets > 1``.

Ray Tune's ``AsyncHyperBandScheduler`` rule. A bracket ``s`` has rungs at
``grace_period * reduction_factor ** (k + s)`` (k = 0, 1, ...) up to and including ``max_t``.
A trial reaches a rung at its first report with ``step >= rung`` (that reports the sweep's
metric); its value is compared with the values recorded earlier at that rung: the cut-off is
their ``nanpercentile`` at ``(1 - 1 / reduction_factor) * 100`` (values made higher-is-better
for mode ``min``), and the trial stops when its value is strictly worse (ties continue; the
first arrival continues). Its value is then recorded at the rung whatever the verdict. A
trial that reaches ``max_t`` ends TERMINATED. A NaN is never recorded.

Unlike Tune's, the rung records are the persisted state, written before a verdict is
delivered, so a resumed driver judges no trial twice on a rung and forgets none; a report at
a rung waits for its verdict, so a stopped trial ends exactly at the rung; and the bracket of
a trial is a pure function of its id, never a random draw at run time.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from service.schedulers.base import CONTINUE, Decision, Scheduler, Stop, SyncSteps
from service.spec import AshaSpec

# The reason a trial that reaches max_t stops with: a step budget, so it ends TERMINATED.
MAX_STEPS = "max-steps"


def asha(grace_period: int, max_t: int, reduction_factor: float = 4.0,
         brackets: int = 1) -> dict:
    """Stop the losing trials early (asynchronous successive halving; asynchronous
    Hyperband with ``brackets > 1``): rungs at ``grace_period * reduction_factor ** k`` steps
    up to ``max_t``, where only the top ``1 / reduction_factor`` of the values recorded so
    far go on. Validated with the rest of the spec."""
    return {"type": "asha", "grace_period": grace_period, "max_t": max_t,
            "reduction_factor": reduction_factor, "brackets": brackets}


def rungs(grace_period: int, max_t: int, reduction_factor: float, bracket: int) -> list[float]:
    """The rungs of ``bracket``, lowest first: ``grace_period * reduction_factor ** (k +
    bracket)`` up to and including ``max_t`` (a float rounding of an exact power counts)."""
    found, k = [], bracket
    while True:
        rung = grace_period * reduction_factor ** k
        if rung > max_t * (1 + 1e-9):
            return found
        rung = min(rung, max_t)
        found.append(int(rung) if float(rung).is_integer() else float(rung))
        k += 1


def bracket_of(trial_id: str, sizes: list[int]) -> int:
    """The bracket of ``trial_id``: Tune's softmax weights over the brackets' rung counts,
    drawn with a uniform number taken from the id's sha256, so a resumed sweep (or any
    other driver) assigns the same bracket."""
    if len(sizes) == 1:
        return 0
    weights = np.exp(np.array(sizes, dtype=float) - max(sizes))
    cumulative = np.cumsum(weights / weights.sum())
    u = int(hashlib.sha256(trial_id.encode()).hexdigest()[:16], 16) / 2.0 ** 64
    return int(min(np.searchsorted(cumulative, u, side="right"), len(sizes) - 1))


class AsyncHyperBand(Scheduler):
    """The ASHA rule of :class:`AshaSpec` (see the module's docstring)."""

    name = "asha"

    def __init__(self, spec: AshaSpec):
        self.spec = spec
        self.brackets = [rungs(spec.grace_period, spec.max_t, spec.reduction_factor, s)
                         for s in range(spec.brackets)]
        # bracket -> rung index -> {trial id: [value (higher is better), stop reason or None,
        # the step of the report judged]}
        self.records: list[list[dict[str, list]]] = [[{} for _ in b] for b in self.brackets]

    # -- the rule

    def bracket(self, trial_id: str) -> int:
        return bracket_of(trial_id, [len(b) for b in self.brackets])

    def sync_steps(self, trial_id: str) -> SyncSteps:
        """The rungs of the trial's bracket not yet passed (a rung where it was stopped is
        named again, so a resumed attempt hears the same verdict), and ``max_t``."""
        b = self.bracket(trial_id)
        steps = {math.ceil(rung) for i, rung in enumerate(self.brackets[b])
                 if self.records[b][i].get(trial_id, (None, None))[1] is not None
                 or trial_id not in self.records[b][i]}
        steps.add(self.spec.max_t)
        return SyncSteps(steps=tuple(sorted(steps)))

    def verdict(self, trial_id: str) -> tuple[int, str] | None:
        b = self.bracket(trial_id)
        for recorded in self.records[b]:
            record = recorded.get(trial_id)
            if record is not None and record[1] is not None:
                return int(record[2]), record[1]
        return None

    def on_result(self, trial_id: str, step: int, metrics: dict, *, sync: bool) -> Decision:
        metric = self.objective.metric
        if metric not in metrics:
            return CONTINUE
        if step >= self.spec.max_t:
            return Stop(MAX_STEPS)
        b = self.bracket(trial_id)
        for i in reversed(range(len(self.brackets[b]))):
            rung, recorded = self.brackets[b][i], self.records[b][i]
            if step < rung:
                continue
            if trial_id in recorded:   # judged at this rung before: the same verdict again
                reason = recorded[trial_id][1]
                if reason is not None:
                    return Stop(reason)
                continue
            value = float(metrics[metric])
            if math.isnan(value):      # never recorded; on_nan decides what becomes of it
                return CONTINUE
            score = -self.objective.sign * value   # higher is better
            earlier = [record[0] for record in recorded.values()]
            cutoff = float(np.nanpercentile(earlier, (1 - 1 / self.spec.reduction_factor)
                                            * 100)) if earlier else None
            reason = None
            if cutoff is not None and score < cutoff:
                reason = (f"asha: rung {i} (step {rung:g}): {metric} {value:.6g} not in top "
                          f"1/{self.spec.reduction_factor:g} (cut-off "
                          f"{-self.objective.sign * cutoff:.6g})")
            recorded[trial_id] = [score, reason, step]
            self.changed()
            return CONTINUE if reason is None else Stop(reason)
        return CONTINUE

    # -- persistence

    def state(self) -> dict:
        return {"type": self.name, "brackets": [
            [{"step": rung, "records": self.records[b][i]} for i, rung in enumerate(bracket)]
            for b, bracket in enumerate(self.brackets)]}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("brackets") or []
        for b, bracket in enumerate(self.brackets):
            for i, rung in enumerate(bracket):
                try:
                    entry = saved[b][i]
                except (IndexError, TypeError):
                    continue
                if entry.get("step") == rung:
                    self.records[b][i] = {t: list(v) for t, v in entry["records"].items()}
