"""Faults inside a running trial, on a real Ray (the session's embedded instance): a worker
SIGKILLed, a worker dying hard in the middle of a checkpoint, damaged checkpoints, and a full
disk while writing a checkpoint or an event file. Every faulty trial must end exactly as the
same trial run without a fault (``reference``, compared on ``helpers.COMPARED``), with each
step once in its run."""

import json
import os
import signal
from pathlib import Path

import pytest

from engine.checkpoint import verify_checkpoint
from service.events import event_files, read_records
from tests.reliability.helpers import (Control, DriverThread, calls, copy_sweep, each_step_once,
                                       outcome, running_pid, trial_ids, wait_for)
from tests.service.tb_helpers import written_points


def reported_steps(run: Path) -> list[int]:
    """The steps of the run's ``loss`` points on disk (event writes are not buffered)."""
    return [step for step, _ in written_points(run)["loss"]]


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.json"))


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def assert_matches_reference(result, reference):
    for trial in result.trials:
        assert each_step_once(result.root, trial.id) == [], trial.id
        assert outcome(result.root, trial.id) == reference[trial.id], trial.id


def test_a_worker_killed_past_a_checkpoint_resumes_on_a_fresh_worker(local_ray, reference,
                                                                     tmp_path):
    path = copy_sweep(tmp_path)
    victim = trial_ids(path)[1]
    control = Control(path, victim)
    control.arm("pause", 24)
    driver = DriverThread(path, tmp_path / "logs")
    paused = control.wait_paused(alive=driver.alive)
    run = driver.root / victim
    # The pid comes from the actor itself: its info() as recorded in state.json, and
    # os.getpid() inside train; both name the one Ray worker process running the trial.
    pid = wait_for(lambda: running_pid(driver.root, victim), alive=driver.alive,
                   what="the attempt's pid in state.json")
    assert pid == paused["pid"] and cmdline(pid).startswith("ray::")
    # Negative control: the kill comes mid-trial, after reports past the latest checkpoint
    # (ckpt-20, saved after step 19) reached the run.
    assert checkpoint_steps(run) == [10, 20] and reported_steps(run)[-1] >= 20
    os.kill(pid, signal.SIGKILL)

    result, status = driver.join()
    assert status == 0
    record = next(t for t in result.trials if t.id == victim)
    assert record.state.value == "TERMINATED" and len(record.attempts) == 2
    assert [a.outcome for a in record.attempts] == ["worker-died", "finished"]
    assert record.attempts[0].pid == pid != record.attempts[1].pid      # a fresh worker
    assert calls(path)[victim] == [0, 20]                                # from ckpt-20
    assert "died" in (run / "error.txt").read_text()
    assert_matches_reference(result, reference)


@pytest.mark.filterwarnings("ignore::engine.checkpoint.CheckpointWarning")
def test_a_damaged_checkpoint_is_named_skipped_and_the_trial_ends_right(local_ray, reference,
                                                                       tmp_path, capsys):
    path = copy_sweep(tmp_path)
    ids = trial_ids(path)
    damaged = {ids[0]: "truncate", ids[3]: "flip"}
    controls = {trial: Control(path, trial) for trial in damaged}
    for control in controls.values():
        control.arm("pause", 24)
    driver = DriverThread(path, tmp_path / "logs")
    for trial, damage in damaged.items():
        paused = controls[trial].wait_paused(alive=driver.alive)
        data_file = driver.root / trial / "checkpoints" / "ckpt-20.npz"
        blob = bytearray(data_file.read_bytes())
        if damage == "truncate":
            data_file.write_bytes(blob[:len(blob) * 2 // 3])
        else:   # one bit of one weight, the zip structure intact
            blob[len(blob) // 2] ^= 0x10
            data_file.write_bytes(bytes(blob))
        os.kill(paused["pid"], signal.SIGKILL)
    result, status = driver.join()
    assert status == 0
    err = capsys.readouterr().err
    for trial in damaged:
        assert calls(path)[trial] == [0, 10]      # ckpt-20 was skipped for ckpt-10
        warned = [line for line in err.splitlines()
                  if f"{trial}/checkpoints/ckpt-20.npz" in line and "skipping" in line]
        assert len(warned) == 1, err               # the driver's user is told, once
    assert "ckpt-20.npz is damaged" in err
    assert_matches_reference(result, reference)


@pytest.mark.filterwarnings("ignore::engine.checkpoint.CheckpointWarning")
def test_a_worker_dying_while_checkpointing_leaves_the_previous_checkpoint(local_ray, reference,
                                                                          tmp_path):
    path = copy_sweep(tmp_path)
    ids = trial_ids(path)
    points = {ids[0]: "data-written", ids[2]: "after-data-rename", ids[4]: "before-state-file"}
    controls = {trial: Control(path, trial) for trial in points}
    for trial, point in points.items():
        controls[trial].arm("die", f"29 {point}")       # while saving ckpt-30
        controls[trial].arm("pause", "resume")          # hold the retry before it cleans up
    driver = DriverThread(path, tmp_path / "logs")
    for trial, point in points.items():
        controls[trial].wait_paused(alive=driver.alive)
        folder = driver.root / trial / "checkpoints"
        names = set(os.listdir(folder))
        state = json.loads((folder / "checkpoint").read_text())
        # The process really died at that point of the save ...
        if point == "data-written":
            assert "ckpt-30.npz" not in names
            assert any(n.startswith(".ckpt-30.npz.") and n.endswith(".tmp") for n in names)
        elif point == "after-data-rename":
            assert "ckpt-30.npz" in names and "ckpt-30.json" not in names
        else:
            assert {"ckpt-30.npz", "ckpt-30.json"} <= names
        # ... the state file still names ckpt-20, which verifies, and the retry restored it.
        assert state["latest"] == "ckpt-20"
        verify_checkpoint(folder / "ckpt-20")
        assert calls(path)[trial] == [0, 20]
        controls[trial].resume()
    result, status = driver.join()
    assert status == 0
    for trial in points:
        record = next(t for t in result.trials if t.id == trial)
        assert [a.outcome for a in record.attempts] == ["worker-died", "finished"]
        leftovers = [p.name for p in (result.root / trial).rglob(".*") if ".tmp" in p.name]
        assert leftovers == []
    assert_matches_reference(result, reference)


def test_a_full_disk_fails_the_attempt_cleanly_and_the_retry_succeeds(local_ray, reference,
                                                                      tmp_path):
    path = copy_sweep(tmp_path)
    ids = trial_ids(path)
    faults = {ids[1]: ("enospc-event", 23), ids[2]: ("enospc-checkpoint", 29)}
    controls = {trial: Control(path, trial) for trial in faults}
    for trial, (fault, step) in faults.items():
        controls[trial].arm(fault, step)
        controls[trial].arm("pause", "resume")
    driver = DriverThread(path, tmp_path / "logs")
    for trial, (fault, step) in faults.items():
        # The failed attempt ended (no hang) and its retry started: look at what it left.
        controls[trial].wait_paused(alive=driver.alive)
        run = driver.root / trial
        assert "No space left on device" in (run / "error.txt").read_text()
        for event_file in event_files(run):     # only whole events under final names
            assert read_records(event_file.read_bytes())[1], event_file.name
        names = set(os.listdir(run / "checkpoints"))
        assert not [n for n in names if n.startswith(".")]      # no temporary left behind
        assert checkpoint_steps(run) == [10, 20]                # ckpt-30 never appeared
        for name in ("ckpt-10", "ckpt-20"):
            verify_checkpoint(run / "checkpoints" / name)
        steps = reported_steps(run)
        assert steps == list(range(len(steps)))    # whole events of consecutive steps
        if fault == "enospc-event":   # the half-written event was cut off
            assert 20 <= steps[-1] < 23
        assert calls(path)[trial] == [0, 20]
        controls[trial].resume()
    result, status = driver.join()
    assert status == 0
    for trial in faults:
        record = next(t for t in result.trials if t.id == trial)
        assert [a.outcome for a in record.attempts] == ["error", "finished"]
    assert_matches_reference(result, reference)
