"""A driver SIGKILLed mid-sweep (a ``launch`` subprocess with its own embedded Ray), then
resumed with ``resume``: while it ran, a second driver was refused; after its death its lock
is taken over with a warning, finished trials do not run again, a copy of a worker process
that outlived it is fenced off, and every trial ends bit for bit as in an uninterrupted sweep.

The scenario runs once (module fixture); each test checks one promise of it. With two trials
at a time, trials 0 and 1 finish, trial 2 pauses after step 24 (past its ckpt-20) with an
orphan forked, trial 3 pauses at step 4 (before any checkpoint) and trial 4 waits.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from service.storage import SweepState
from tests.drivers import reap, running, start_driver
from tests.reliability.helpers import (Control, calls, copy_sweep, each_step_once,
                                       listing, outcome, process_alive, running_pid, trial_ids,
                                       wait_for)

TIMEOUT = 120


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT, start_new_session=True)


@pytest.fixture(scope="module")
def killed_driver(tmp_path_factory):
    folder = tmp_path_factory.mktemp("killed")
    path = copy_sweep(folder / "sweepfiles")
    storage = folder / "logs"
    sweep_dir = storage / "faults"
    ids = trial_ids(path)
    resumed_at, held = ids[2], ids[3]
    controls = {trial: Control(path, trial) for trial in ids}
    controls[resumed_at].arm("pause", 24)
    controls[resumed_at].arm("orphan", 1)
    controls[held].arm("pause", 4)
    seen = SimpleNamespace(path=path, sweep_dir=sweep_dir, ids=ids, resumed_at=resumed_at,
                           held=held)
    first = start_driver(["launch", str(path), "--storage", str(storage), "--max-concurrent",
                          "2"], cwd=folder)
    orphan = None
    try:
        for trial in (resumed_at, held):
            controls[trial].wait_paused(timeout=TIMEOUT, alive=running(first))
        seen.finished = sorted(p.parent.name for p in sweep_dir.glob("*/result.json"))
        seen.worker_pids = {t: wait_for(lambda t=t: running_pid(sweep_dir, t),
                                        alive=running(first)) for t in (resumed_at, held)}
        seen.state_before = SweepState.load(sweep_dir / "state.json").by_id()
        seen.old_attempt = (sweep_dir / resumed_at / ".attempt").read_text().strip()

        # A second driver on the same folder, by launch and by resume, while the first runs.
        before = listing(storage, skip=("faults/state.json",))
        seen.second = [cli("launch", str(path), "--storage", str(storage), cwd=folder),
                       cli("resume", str(sweep_dir), cwd=folder)]
        seen.unchanged = listing(storage, skip=("faults/state.json",)) == before

        seen.driver_pid = first.pid
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        reap(first)
    pid_file = controls[resumed_at].folder / "orphan.pid"
    orphan = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=30,
                          what="the orphan's pid"))
    try:
        # The killed driver's Ray workers go (their raylet is gone); the forked copy of one
        # stays, holding the attempt's open files, as a worker that outlived its driver.
        for pid in seen.worker_pids.values():
            wait_for(lambda pid=pid: not process_alive(pid), timeout=60,
                     what=f"worker {pid} to exit")
        seen.orphan_alive_after_kill = process_alive(orphan)
        seen.calls_before = calls(path)
        for trial in (resumed_at, held):
            controls[trial].resume()                   # the dead processes' pause records
        controls[resumed_at].arm("pause", "resume")    # hold the new attempt once it restored

        resumed = start_driver(["resume", str(sweep_dir)], cwd=folder)
        try:
            controls[resumed_at].wait_paused(timeout=TIMEOUT, alive=running(resumed))
            seen.new_attempt = (sweep_dir / resumed_at / ".attempt").read_text().strip()
            seen.orphan_alive_during_resume = process_alive(orphan)
            controls[resumed_at].release_orphan()      # it goes on with its old attempt ...
            seen.orphans = wait_for(controls[resumed_at].orphans, timeout=60,
                                    what="the orphan to stop")
            controls[resumed_at].resume()              # ... then the new attempt does
            out, err = resumed.communicate(timeout=TIMEOUT)
            seen.resume = SimpleNamespace(returncode=resumed.returncode, stdout=out, stderr=err)
        finally:
            reap(resumed)
    finally:
        if orphan is not None and process_alive(orphan):
            os.kill(orphan, signal.SIGKILL)
    return seen


def test_a_second_driver_is_refused_naming_pid_and_host(killed_driver):
    seen = killed_driver
    for second in seen.second:
        assert second.returncode == 2, second.stderr
        assert "Traceback" not in second.stderr
        errors = [line for line in second.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1, second.stderr
        assert f"pid {seen.driver_pid} on host {socket.gethostname()}" in errors[0]
        assert str(seen.sweep_dir) in errors[0]
    assert seen.unchanged      # the refused drivers wrote nothing


def test_a_killed_drivers_lock_is_taken_over_with_a_warning(killed_driver):
    seen = killed_driver
    assert seen.resume.returncode == 0, seen.resume.stderr
    warned = [line for line in seen.resume.stderr.splitlines() if "taking over the lock" in line]
    assert len(warned) == 1 and f"pid {seen.driver_pid}" in warned[0], seen.resume.stderr
    assert (seen.sweep_dir / ".lock").read_text() == ""     # released cleanly at the end


def test_nothing_finished_runs_again_and_every_trial_ends_as_uninterrupted(killed_driver,
                                                                           reference):
    seen = killed_driver
    # The kill came mid-sweep: two trials finished, two paused mid-way, one not started.
    assert seen.finished == seen.ids[:2]
    assert [seen.state_before[t].state.value for t in seen.ids] == \
        ["TERMINATED", "TERMINATED", "RUNNING", "RUNNING", "PENDING"]
    started = calls(seen.path)
    assert seen.calls_before == {t: [0] for t in seen.ids[:4]}
    assert {t: started[t] for t in seen.ids} == {
        seen.ids[0]: [0], seen.ids[1]: [0],      # finished: never run again
        seen.resumed_at: [0, 20],                # on from its checkpoint
        seen.held: [0, 0],                       # it had none: from the start
        seen.ids[4]: [0]}
    state = SweepState.load(seen.sweep_dir / "state.json").by_id()
    assert all(t.failed_attempts == 0 for t in state.values())   # a driver's death is free
    assert [a.outcome for a in state[seen.resumed_at].attempts] == ["driver-lost", "finished"]
    for trial in seen.ids:
        assert each_step_once(seen.sweep_dir, trial) == [], trial
        assert outcome(seen.sweep_dir, trial) == reference[trial], trial


def test_an_orphaned_writer_of_the_killed_driver_is_fenced(killed_driver):
    seen = killed_driver
    # Negative control: the orphan really outlived the driver and ran beside the new attempt.
    assert seen.orphan_alive_after_kill and seen.orphan_alive_during_resume
    assert seen.new_attempt != seen.old_attempt
    (stopped,) = seen.orphans.values()
    # Its first write after the pause (the scalars of step 24) met the fence.
    assert stopped["step"] is None
    assert stopped["error"].startswith("StaleAttempt: attempt " + seen.old_attempt)
    assert seen.new_attempt in stopped["error"]
    run = Path(seen.sweep_dir / seen.resumed_at)
    result = json.loads((run / "result.json").read_text())
    assert result["attempt"] == seen.new_attempt
