"""What the driver and its workers say to each other: trial states, attempt outcomes, the
live items a worker streams while an attempt runs, and what an attempt returns.

Plain data, cheap to pickle. The enums are ``str`` enums so that ``state.json`` keeps
their values (``"TERMINATED"``, ``"worker-died"``) and a record read back compares equal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class TrialState(str, enum.Enum):
    """A trial's place in its life: PENDING -> RUNNING -> TERMINATED | ERROR | STOPPED."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"
    STOPPED = "STOPPED"


class Outcome(str, enum.Enum):
    """How one attempt ended (``Attempt.outcome`` in ``state.json``)."""

    FINISHED = "finished"          # train returned (or reached its step budget): TERMINATED
    STOPPED = "stopped"            # a final decision: early stop, time budget, diverged
    INTERRUPTED = "interrupted"    # Ctrl-C: the trial goes back to PENDING
    ERROR = "error"                # train raised: retried while retries last
    WORKER_DIED = "worker-died"    # the worker process died: retried likewise
    STALE = "stale"                # another attempt took over: not this one's to judge
    DRIVER_LOST = "driver-lost"    # the driver died while it ran: costs no retry

    @property
    def failed(self) -> bool:
        """True for outcomes that count against ``max_failures``."""
        return self in (Outcome.ERROR, Outcome.WORKER_DIED)


# ----------------------------------------------------------------- live items (worker -> driver)

@dataclass(frozen=True)
class Report:
    """``trial.report(step, ...)``: the metrics of one call. ``wait``: the worker is blocked
    until the driver answers with a :class:`~service.schedulers.Decision` for this step."""

    step: int
    metrics: dict
    wait: bool = False


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint whose data was verified (hashed when written, or read back), with the
    size and modification time its data file had then: a worker that finds the same size
    and time loads it without hashing it again."""

    path: str                 # relative to the sweep folder
    global_step: int
    sha256: str
    size: int
    mtime_ns: int

    def to_dict(self) -> dict:
        return {"path": self.path, "global_step": self.global_step, "sha256": self.sha256,
                "size": self.size, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_dict(cls, d: dict | None) -> "CheckpointRef | None":
        if not isinstance(d, dict):
            return None
        try:
            return cls(str(d["path"]), int(d["global_step"]), str(d["sha256"]), int(d["size"]),
                       int(d["mtime_ns"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class CheckpointSaved:
    """``trial.checkpoint(sess, step)`` wrote a checkpoint."""

    ref: CheckpointRef


@dataclass(frozen=True)
class Baseline:
    """The attempt cleaned its run at its restore step: the metrics summary it starts from
    (``MetricsSummary.to_dict()``)."""

    summary: dict


@dataclass(frozen=True)
class Notice:
    """Something the driver's user should read (e.g. a damaged checkpoint skipped)."""

    message: str


@dataclass(frozen=True)
class Output:
    """Whole lines ``train`` printed, on ``stream`` ("stdout" or "stderr")."""

    stream: str
    text: str


LiveItem = Report | CheckpointSaved | Baseline | Notice | Output


# ----------------------------------------------------------------- what an attempt returns

@dataclass
class AttemptResult:
    """What ``run_attempt`` returns: how the attempt ended, the trial's state after it (None
    when not the attempt's to say), why, the traceback of a failure, the metrics summary,
    the latest checkpoint, and the live items not yet polled."""

    outcome: Outcome
    state: TrialState | None = None
    reason: str | None = None
    error: str | None = None
    summary: dict | None = None        # MetricsSummary.to_dict()
    checkpoint: CheckpointRef | None = None
    items: list = field(default_factory=list)

    def completion_record(self) -> dict:
        """The JSON fields of ``result.json`` and of a retry's knowledge of the attempt."""
        return {"outcome": self.outcome.value,
                "state": None if self.state is None else self.state.value,
                "reason": self.reason, **(self.summary or {}),
                "checkpoint": None if self.checkpoint is None else self.checkpoint.path,
                "checkpoint_ref": None if self.checkpoint is None else self.checkpoint.to_dict()}
