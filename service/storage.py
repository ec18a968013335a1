"""Storage: the sweep folder's layout, atomic files, the driver's lock and the trial table.

Layout (see DESIGN)::

    <storage>/<sweep>/sweep.json  state.json  events.out.tfevents.*  .lock
    <storage>/<sweep>/<trial-id>/ events.out.tfevents.*  params.json  results.jsonl
                                  result.json  error.txt  checkpoints/
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.atomic import atomic_write_bytes as _atomic_write_bytes
from service.messages import CheckpointRef, Outcome, TrialState
from service.names import MAX_FOLDER_BYTES, check_folder_name


class StorageError(RuntimeError):
    """A file or folder on storage that cannot be used; the message names it."""


# ----------------------------------------------------------------- atomic files

def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one
    (:func:`engine.atomic.atomic_write_bytes`: temporary file, fsync, rename, folder fsync)."""
    path = Path(path)
    # TensorBoard reads any file whose name contains "tfevents": not the temporary one
    _atomic_write_bytes(path, data, stem=path.name.replace("tfevents", "tfev"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``atomic_write_bytes`` of ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file, or raise StorageError naming ``what`` and the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StorageError(f"{what} {str(path)!r} does not exist") from None
    except OSError as err:
        raise StorageError(f"cannot read {what} {str(path)!r}: {err.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise StorageError(f"{what} {str(path)!r} is corrupt (line {err.lineno}: {err.msg})") \
            from None


# ----------------------------------------------------------------- layout

@dataclass(frozen=True)
class TrialPaths:
    """The files of one trial's run folder."""

    dir: Path

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def params_json(self) -> Path:
        return self.dir / "params.json"

    @property
    def results_jsonl(self) -> Path:
        return self.dir / "results.jsonl"

    @property
    def result_json(self) -> Path:
        return self.dir / "result.json"

    @property
    def error_txt(self) -> Path:
        return self.dir / "error.txt"

    @property
    def attempt_file(self) -> Path:
        """Names the trial's current attempt: the fence a stale attempt's worker checks."""
        return self.dir / ".attempt"


@dataclass(frozen=True)
class SweepPaths:
    """The files of one sweep's folder."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def sweep_json(self) -> Path:
        return self.root / "sweep.json"

    @property
    def state_json(self) -> Path:
        return self.root / "state.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def scheduler_json(self) -> Path:
        """The scheduler's state (its decisions), written before they take effect."""
        return self.root / "scheduler.json"

    @property
    def searcher_json(self) -> Path:
        """The searcher's state, written before a suggested trial runs."""
        return self.root / "searcher.json"

    def trial(self, trial_id: str) -> TrialPaths:
        try:
            check_folder_name(trial_id, "trial id", MAX_FOLDER_BYTES)
        except ValueError as err:
            raise StorageError(f"bad {err}") from None
        return TrialPaths(self.root / trial_id)


def check_storage(storage: str | os.PathLike) -> Path:
    """The storage folder, created if needed; refuses a file or an unwritable folder."""
    path = Path(storage)
    if path.exists() and not path.is_dir():
        raise StorageError(f"storage {str(path)!r} is not a folder")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise StorageError(f"storage {str(path)!r} is not writable")
    parent = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(f"storage {str(path)!r} cannot be created: {str(parent)!r} is not a "
                           "writable folder")
    return path


# ----------------------------------------------------------------- the lock

class LockHeld(StorageError):
    """Another driver runs this sweep."""


class SweepLock:
    """An exclusive ``fcntl.flock`` on the sweep's ``.lock``.

    The kernel releases it when the holder dies, however it dies, so there is no guessing
    from pids. The file records the holder's pid and host for the refusal message; finding
    a record but no lock means the previous driver died: that is taken over with a warning.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(f"sweep folder {str(self.path.parent)!r} is in use by another "
                               f"driver (pid {holder.get('pid', '?')} on host "
                               f"{holder.get('host', '?')}); wait for it or stop it first") \
                    from None
            raise StorageError(f"cannot lock {str(self.path)!r}: {err.strerror}") from None
        previous = _read_holder(fd)
        if previous:
            warnings.warn(f"taking over the lock of {str(self.path.parent)!r} left by a driver "
                          f"that is no longer running (pid {previous.get('pid', '?')} on host "
                          f"{previous.get('host', '?')})", stacklevel=2)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Clear the record (a clean exit leaves nothing to take over) and unlock."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------- the trial table

@dataclass
class Attempt:
    """One try at a trial: which worker (node id and pid) ran it, when, and how it ended
    (``outcome``: None while running, then an :class:`Outcome`)."""

    id: str
    node: str | None = None
    pid: int | None = None
    started: float | None = None
    ended: float | None = None
    outcome: Outcome | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "node": self.node, "pid": self.pid, "started": self.started,
                "ended": self.ended,
                "outcome": None if self.outcome is None else self.outcome.value}

    @classmethod
    def from_dict(cls, d: dict) -> "Attempt":
        d = dict(d)
        if d.get("outcome") is not None:
            d["outcome"] = Outcome(d["outcome"])
        return cls(**d)


@dataclass
class TrialRecord:
    """One row of ``state.json``.

    ``last_metrics``: the metrics reported at ``last_step`` (tags of that step merged).
    ``best_metrics``: ``{"step": s, **metrics}`` of the step where the sweep's metric was
    best (for ``best --scope all``). ``checkpoint``: the latest checkpoint's path relative to
    the sweep folder, or None. ``reason``: why a trial is STOPPED or ERROR.
    """

    id: str
    index: int
    config: dict
    state: TrialState = TrialState.PENDING
    reason: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    last_step: int | None = None
    last_metrics: dict = field(default_factory=dict)
    best_metrics: dict = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_ref: CheckpointRef | None = None   # the checkpoint's verified digest and stat

    def to_dict(self) -> dict:
        """The row as JSON-ready data, equal to ``dataclasses.asdict`` with the state's value.

        Built field by field: ``asdict`` deep-copies every nested value, which was most of
        the time of saving a big sweep. The config and metrics dicts are the record's own,
        not copies: serialise the result, do not modify it.
        """
        return {"id": self.id, "index": self.index, "config": self.config,
                "state": self.state.value, "reason": self.reason,
                "attempts": [a.to_dict() for a in self.attempts], "last_step": self.last_step,
                "last_metrics": self.last_metrics, "best_metrics": self.best_metrics,
                "checkpoint": self.checkpoint,
                "checkpoint_ref": None if self.checkpoint_ref is None
                else self.checkpoint_ref.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrialRecord":
        d = dict(d)
        d["state"] = TrialState(d["state"])
        d["attempts"] = [Attempt.from_dict(a) for a in d.get("attempts", [])]
        d["checkpoint_ref"] = CheckpointRef.from_dict(d.get("checkpoint_ref"))
        return cls(**d)

    @property
    def failed_attempts(self) -> int:
        """Attempts that count against ``max_failures`` (a killed driver costs none)."""
        return sum(a.outcome is not None and a.outcome.failed for a in self.attempts)


@dataclass
class SweepState:
    """``state.json``: written only by the driver, atomically."""

    sweep: str
    spec_hash: str
    trials: list[TrialRecord]

    def to_dict(self) -> dict:
        return {"sweep": self.sweep, "spec_hash": self.spec_hash,
                "trials": [t.to_dict() for t in self.trials]}

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SweepState":
        data = read_json(path, "sweep state")
        try:
            return cls(data["sweep"], data["spec_hash"],
                       [TrialRecord.from_dict(t) for t in data["trials"]])
        except (KeyError, TypeError, ValueError) as err:
            raise StorageError(f"sweep state {str(path)!r} is corrupt: {err!r}") from None

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    def by_id(self) -> dict[str, TrialRecord]:
        return {t.id: t for t in self.trials}
