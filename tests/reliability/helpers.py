"""Helpers of the reliability tests: fault control files, a driver run in a thread, what two
runs of a trial must agree on, storage listings with hashes, and process trees to reap."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from engine.checkpoint import read_checkpoint
from service.driver import run_sweep
from service.sweep import load_sweep_file
from service.storage import SweepState
from tests.service.tb_helpers import written_points

SWEEPS = Path(__file__).resolve().parent / "sweeps"
STEPS = 40          # sweeps/faults.py
CHECKPOINT_EVERY = 10


def copy_sweep(folder: Path, name: str = "faults") -> Path:
    """A copy of ``sweeps/<name>.py`` in ``folder`` (its calls/ and control/ stay there)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.py"
    shutil.copy(SWEEPS / f"{name}.py", target)
    return target


def trial_ids(sweep_path: Path) -> list[str]:
    return [t.id for t in load_sweep_file(sweep_path).trials()]


def calls(sweep_path: Path) -> dict[str, list[int]]:
    """``{trial id: [start step of each call of train]}``."""
    folder = sweep_path.parent / "calls"
    if not folder.is_dir():
        return {}
    return {p.name: [int(n) for n in p.read_text().split()] for p in folder.iterdir()}


# ----------------------------------------------------------------- fault control

class Control:
    """The control files of one trial of a copied ``faults.py`` (see its docstring)."""

    def __init__(self, sweep_path: Path, trial_id: str):
        self.folder = sweep_path.parent / "control" / trial_id
        self.folder.mkdir(parents=True, exist_ok=True)

    def arm(self, fault: str, argument: str | int) -> None:
        (self.folder / fault).write_text(f"{argument}\n")

    def wait_paused(self, timeout: float = 120.0, alive=None) -> dict:
        """``{"pid", "step"}`` of the paused process, once it paused."""
        path = self.folder / "paused"
        deadline = time.monotonic() + timeout
        while True:
            try:
                return json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            if alive is not None:
                alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.folder.name} never paused")
            time.sleep(0.02)

    def resume(self) -> None:
        """Let a paused process go on."""
        (self.folder / "paused").unlink(missing_ok=True)

    def release_orphan(self) -> None:
        (self.folder / "release").write_text("")

    def orphans(self) -> dict[int, dict]:
        """``{pid: {"step", "error"}}`` of orphans that ended."""
        return {int(p.name.split("-")[1]): json.loads(p.read_text())
                for p in self.folder.glob("orphan-*")}


def wait_for(predicate, timeout: float = 120.0, alive=None, what: str = "the condition"):
    """Poll ``predicate`` until it returns something true; ``alive()`` raises if the thing
    waited on died."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ----------------------------------------------------------------- a driver in a thread

class DriverThread:
    """``run_sweep`` in a background thread of this process (on the session's Ray), so the
    test can act while it runs. ``join`` returns ``(result, status)`` or re-raises."""

    def __init__(self, sweep_path: Path, storage: Path, **options):
        self.sweep = load_sweep_file(sweep_path)
        self.storage = storage
        self.out = io.StringIO()
        self.result = self.status = self.error = None
        self.thread = threading.Thread(target=self._run, kwargs=options, daemon=True)
        self.thread.start()

    def _run(self, **options) -> None:
        try:
            self.result = run_sweep(self.sweep, storage=str(self.storage),
                                    out=self.out, progress=False, **options)
            self.status = self.result.exit_status
        except BaseException as err:  # noqa: BLE001 - handed to the test by join
            self.error = err

    @property
    def root(self) -> Path:
        return self.storage / self.sweep.name

    def alive(self) -> None:
        """Raise if the driver ended (with its error, if any)."""
        if not self.thread.is_alive():
            raise AssertionError(f"the driver ended early: status {self.status}, "
                                 f"error {self.error!r}")

    def join(self, timeout: float = 180.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the driver did not finish"
        if self.error is not None:
            raise self.error
        return self.result, self.status


def state_of(sweep_dir: Path) -> dict:
    """``{trial id: TrialRecord}`` from state.json (empty while there is none)."""
    try:
        return SweepState.load(sweep_dir / "state.json").by_id()
    except Exception:  # noqa: BLE001 - read while the driver replaces it
        return {}


def running_pid(sweep_dir: Path, trial_id: str) -> int | None:
    """The pid recorded in state.json for the trial's open attempt (the actor's own report)."""
    record = state_of(sweep_dir).get(trial_id)
    if record is None or not record.attempts or record.attempts[-1].outcome is not None:
        return None
    return record.attempts[-1].pid


# ----------------------------------------------------------------- what runs must agree on

# The fields two runs of a trial are compared on, bit for bit:
COMPARED = (
    "state", "reason", "last_step", "last_metrics", "best_metrics",   # state.json's record
    "result",      # result.json without its attempt id, end time and checkpoint's file times
    "checkpoint_digest",   # the sha256 of its checkpoint's data, as result.json names it
    "results",     # results.jsonl: (step, metrics) of every line, in order
    "scalars",     # every scalar point of the run as TensorBoard's raw reader reads the files
    "checkpoint",  # the name of the latest checkpoint (its global step)
    "arrays",      # every array in it (weights, Adam's moments and step) as dtype, shape, bytes
    "rng",         # the session's random generator state saved with it
)


def outcome(sweep_dir: Path, trial_id: str) -> dict:
    """A finished trial's :data:`COMPARED` fields, read from storage."""
    record = SweepState.load(sweep_dir / "state.json").by_id()[trial_id]
    run = sweep_dir / trial_id
    result = json.loads((run / "result.json").read_text())
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    state = json.loads((run / "checkpoints" / "checkpoint").read_text())
    arrays, manifest = read_checkpoint(run / "checkpoints" / state["latest"])
    found = {
        "state": record.state.value, "reason": record.reason, "last_step": record.last_step,
        "last_metrics": record.last_metrics, "best_metrics": record.best_metrics,
        "result": {k: v for k, v in result.items()
                   if k not in ("attempt", "ended", "checkpoint_ref")},
        "checkpoint_digest": (result.get("checkpoint_ref") or {}).get("sha256"),
        "results": [(r["step"], r["metrics"]) for r in rows],
        "scalars": written_points(run),
        "checkpoint": state["latest"],
        "arrays": {name: (a.dtype.str, a.shape, a.tobytes()) for name, a in arrays.items()},
        "rng": manifest["rng"],
    }
    assert tuple(found) == COMPARED
    return found


def each_step_once(sweep_dir: Path, trial_id: str, steps: int = STEPS) -> list[str]:
    """What is wrong with a run's steps: every tag in TensorBoard's raw reading and every
    results.jsonl line must hold steps 0 .. steps-1 once each, in order."""
    run = sweep_dir / trial_id
    problems = []
    for tag, points in written_points(run).items():
        if [s for s, _ in points] != list(range(steps)):
            problems.append(f"{tag}: steps {[s for s, _ in points]}")
    rows = [json.loads(line)["step"]
            for line in (run / "results.jsonl").read_text().splitlines()]
    if rows != list(range(steps)):
        problems.append(f"results.jsonl: steps {rows}")
    return problems


# ----------------------------------------------------------------- storage listings

def listing(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{relative path: sha256 of the content (or "dir")}`` of everything under ``root``."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if any(rel == s or rel.startswith(s + os.sep) for s in skip):
            continue
        found[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# ----------------------------------------------------------------- processes

def descendants(pid: int) -> list[int]:
    """``pid``'s living descendants (children first found, then theirs), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its process group and every descendant (they may have left it)."""
    victims = [pid, *descendants(pid)]
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as ended)."""
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"
