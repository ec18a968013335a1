"""The scheduler interface: one small class per rule, one decision method.

A scheduler watches every reported result in the driver and decides, per trial, whether it
continues or stops. Its state must be derivable from what it persists (``state_dict`` /
``load_state_dict``): the controller writes that state to the sweep folder **before** a
decision takes effect, so a resumed driver neither forgets nor reverses one.

Two ways a decision reaches a trial:

- **synchronously**, at steps the scheduler names in advance (``sync_steps``): the worker's
  ``trial.report`` at the first step at or past such a step (that reports the sweep's
  metric) waits for the verdict, so a trial stopped there ends exactly at that step (an ASHA
  rung);
- **asynchronously**, for any other report: a stop travels with the next poll, and the trial
  stops at its next report.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from service.plugin_state import PluginState


@dataclass(frozen=True)
class Continue:
    """Go on training."""

    def __repr__(self) -> str:
        return "CONTINUE"


@dataclass(frozen=True)
class Stop:
    """End the trial as STOPPED (a final decision, not a failure); ``reason`` is shown in
    ``status``, ``SweepResult.table()`` and TensorBoard."""

    reason: str


CONTINUE = Continue()
Decision = Continue | Stop


@dataclass(frozen=True)
class SyncSteps:
    """Where a trial's ``report`` waits for a decision: at the first report at or past each
    of ``steps`` (sorted), and, with ``every``, at or past every multiple of it (minus one:
    the report of step ``k * every - 1`` completes ``k * every`` steps)."""

    steps: tuple[int, ...] = ()
    every: int | None = None

    def __bool__(self) -> bool:
        return bool(self.steps) or self.every is not None


class Scheduler(PluginState):
    """The interface, and the default rule: every trial runs to its end (FIFO).

    ``objective`` (set by :meth:`setup`) gives the sweep's metric and mode.
    """

    #: the name shown in stop reasons and persisted with the state
    name = "fifo"

    def setup(self, objective, trial_ids: list[str],
              history: Callable[[str], list[tuple[int, dict]]] | None = None) -> None:
        """Called once per driver start, before any result, with the sweep's objective
        (``metric``, ``mode``, ``sign``), the trials known so far and, for a rule that needs
        every value reported so far, ``history(trial_id)``: the trial's ``(step, metrics)``
        as durably recorded (its ``results.jsonl``). :meth:`load_state_dict` comes first on
        a resume."""
        self.objective = objective

    def sync_steps(self, trial_id: str) -> SyncSteps:
        """The steps at which ``trial_id``'s next attempt must wait for a decision (none:
        every decision is asynchronous). Steps already decided for it must not be named
        again, so a retried attempt is not judged twice at one step."""
        return SyncSteps()

    def on_result(self, trial_id: str, step: int, metrics: dict, *, sync: bool) -> Decision:
        """Decide after a report of ``trial_id``; ``sync`` when its worker waits for this
        answer (a step named by :meth:`sync_steps`)."""
        return CONTINUE

    def on_complete(self, trial_id: str, state: Any) -> None:
        """``trial_id`` reached a final state (TERMINATED, STOPPED, ERROR)."""

    def verdict(self, trial_id: str) -> tuple[int, str] | None:
        """``(step, reason)`` when this scheduler stopped ``trial_id`` at a report of a step
        at or past ``step``, else None: a trial whose latest checkpoint is past that step
        had acted on the verdict (the stop checkpoint) and is finished without training."""
        return None


