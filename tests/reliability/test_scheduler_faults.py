"""ASHA's decisions survive crashes: every value recorded at a rung, with its verdict, is on
storage (``scheduler.json``) before the trial goes on, so a driver SIGKILLed mid-sweep and
resumed, or a worker SIGKILLed and retried, neither forgets nor repeats a decision.

The sweep is ``sweeps/ranked_faults.py``: nine trials whose loss is their quality, run one
at a time, so every trial reaches every rung in index order and the verdicts of a faulty run
must equal those of an uninterrupted run of the same sweep (``reference``), rung record for
rung record and trial for trial. With rungs at steps 4 and 12 and max_t 36:

    trial   0    1    2    3    4     5    6    7    8
    ends    36   r0   36   r0   r1    r0   36   r0   r0      (r0: stopped at step 4 ...)

The driver scenario (a ``launch`` subprocess with its own embedded Ray, then ``resume``
twice) runs once (module fixture); each test checks one promise of it. The first kill comes
while trial 4, which passed rung 0, is between the rungs (paused after step 6; its latest
checkpoint is ckpt-4, so the resumed attempt reports the rung's step again); the second
while trial 7, stopped at rung 0, has its verdict and its stop checkpoint (ckpt-5) but not
yet its completion record.
"""

import json
import os
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from service.storage import SweepState
from tests.drivers import reap, running, start_driver
from tests.reliability.helpers import (Control, DriverThread, calls, copy_sweep, outcome,
                                       process_alive, running_pid, trial_ids, wait_for)

TIMEOUT = 120
SWEEP = "ranked_faults"
MAX_T = 36
# The step each trial ends at when run without a fault (see the module's docstring).
ENDS = [MAX_T, 4, MAX_T, 4, 12, 4, MAX_T, 4, 4]
ALL_RUNGS = "4 12 36"     # what a fresh attempt waits for a verdict at (and max_t)


def rung_records(sweep_dir: Path) -> dict[int, dict[str, list]]:
    """``{rung step: {trial id: [value, stop reason or None]}}`` from scheduler.json."""
    saved = json.loads((sweep_dir / "scheduler.json").read_text())
    assert saved["type"] == "asha" and len(saved["brackets"]) == 1
    return {rung["step"]: rung["records"] for rung in saved["brackets"][0]}


def waits(sweep_path: Path) -> dict[str, list[str]]:
    """``{trial id: [the steps each call of train waited for a verdict at]}``."""
    folder = sweep_path.parent / "waits"
    return {p.name: p.read_text().splitlines() for p in folder.iterdir()}


def finished(sweep_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in sweep_dir.glob("*/result.json"))


def outcomes(sweep_dir: Path) -> dict[str, dict]:
    return {t: outcome(sweep_dir, t) for t in SweepState.load(sweep_dir / "state.json").by_id()}


# ----------------------------------------------------------------- the uninterrupted run

@pytest.fixture(scope="module")
def reference(local_ray, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranked-reference")
    path = copy_sweep(folder, SWEEP)
    result, status = DriverThread(path, folder / "logs").join()
    assert status == 0
    ids = trial_ids(path)
    # The rule is not vacuous here: the table of the module's docstring.
    assert [t.last_step for t in sorted(result.trials, key=lambda t: t.index)] == ENDS
    records = rung_records(result.root)
    assert list(records[4]) == ids and list(records[12]) == [ids[i] for i in (0, 2, 4, 6)]
    return SimpleNamespace(ids=ids, records=records, outcomes=outcomes(result.root),
                           calls=calls(path))


def assert_ends_as_reference(sweep_dir: Path, reference, trials) -> None:
    for trial in trials:
        found = outcome(sweep_dir, trial)
        brief = {k: found[k] for k in ("state", "reason", "last_step", "checkpoint")}
        expected = {k: reference.outcomes[trial][k] for k in brief}
        assert brief == expected, trial
        assert found == reference.outcomes[trial], trial


# ----------------------------------------------------------------- a driver killed twice

def wait_gone(pause: dict) -> None:
    """Wait until the paused worker of a killed driver went with its Ray (a worker left
    running would go on with the killed driver's attempt once its pause is removed)."""
    wait_for(lambda: not process_alive(pause["pid"]), timeout=60,
             what=f"worker {pause['pid']} to exit")


def snapshot(sweep_dir: Path, path: Path) -> SimpleNamespace:
    return SimpleNamespace(records=rung_records(sweep_dir), finished=finished(sweep_dir),
                           state=SweepState.load(sweep_dir / "state.json").by_id(),
                           calls=calls(path), checkpoints={
                               t: sorted(p.name for p in (sweep_dir / t / "checkpoints")
                                         .glob("ckpt-*.json"))
                               for t in os.listdir(sweep_dir) if (sweep_dir / t).is_dir()})


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranked-killed")
    path = copy_sweep(folder / "sweepfiles", SWEEP)
    storage = folder / "logs"
    sweep_dir = storage / SWEEP
    ids = trial_ids(path)
    between, stopped = ids[4], ids[7]
    seen = SimpleNamespace(path=path, sweep_dir=sweep_dir, ids=ids, between=between,
                           stopped=stopped, before=[])
    for trial, step in ((between, 6), (stopped, 4)):
        Control(path, trial).arm("pause", step)

    commands = [["launch", str(path), "--storage", str(storage), "--max-concurrent", "1"],
                ["resume", str(sweep_dir)]]
    for trial, command in zip((between, stopped), commands, strict=True):
        driver = start_driver(command, cwd=folder)
        try:
            control = Control(path, trial)
            paused = control.wait_paused(timeout=TIMEOUT, alive=running(driver))
            # state.json is written at a bounded rate: wait until it names the open attempt.
            wait_for(lambda trial=trial: running_pid(sweep_dir, trial), timeout=TIMEOUT,
                     alive=running(driver), what=f"{trial}'s attempt in state.json")
            seen.before.append(snapshot(sweep_dir, path))
            driver.send_signal(signal.SIGKILL)
            driver.wait(30)
        except AssertionError as err:   # a wait timed out: say what the driver said
            reap(driver)
            raise AssertionError(f"{err}; the driver's stderr:\n"
                                 f"{driver.communicate(timeout=30)[1][-3000:]}") from None
        finally:
            reap(driver)     # and the rest of its process group: its Ray
        wait_gone(paused)
        control.resume()     # the dead process's pause record

    last = start_driver(["resume", str(sweep_dir)], cwd=folder)
    try:
        out, err = last.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        reap(last)
        raise AssertionError(f"the last resume did not finish:\n"
                             f"{last.communicate(timeout=30)[1][-3000:]}") from None
    finally:
        reap(last)
    seen.resume = SimpleNamespace(returncode=last.returncode, stdout=out, stderr=err)
    seen.records = rung_records(sweep_dir)
    seen.state = SweepState.load(sweep_dir / "state.json").by_id()
    seen.calls, seen.waits = calls(path), waits(path)
    return seen


def test_the_kills_came_where_intended(killed, reference):
    """Negative control: each kill came after decisions were made and while a trial was
    between them, and the verdicts it had heard were on storage."""
    seen = killed
    ids = seen.ids
    first, second = seen.before
    assert first.finished == ids[:4]                    # 1 and 3 stopped at rung 0
    assert first.state[seen.between].state.value == "RUNNING"
    assert first.checkpoints[seen.between] == ["ckpt-4.json"]   # it reports step 4 again
    assert second.finished == ids[:7]
    assert second.state[seen.stopped].state.value == "RUNNING"
    assert second.checkpoints[seen.stopped] == ["ckpt-4.json", "ckpt-5.json"]   # stop ckpt


def test_every_verdict_is_on_storage_before_the_trial_goes_on(killed, reference):
    seen = killed
    ids, expected = seen.ids, reference.records
    first, second = seen.before
    # Killed past rung 0: trial 4's value and "continue" were durable, with all earlier ones.
    assert first.records[4] == {t: expected[4][t] for t in ids[:5]}
    assert first.records[12] == {t: expected[12][t] for t in (ids[0], ids[2])}
    assert first.records[4][seen.between][1] is None
    # Killed after trial 7's stop verdict reached it, before its completion record.
    assert second.records[4] == {t: expected[4][t] for t in ids[:8]}
    assert second.records[4][seen.stopped][1].startswith("asha: rung 0 (step 4)")
    assert seen.stopped not in second.finished


def test_a_resumed_driver_keeps_every_rung_record(killed, reference):
    seen = killed
    assert seen.resume.returncode == 0, seen.resume.stderr
    for before in seen.before:
        for rung, records in before.records.items():
            assert {t: seen.records[rung].get(t) for t in records} == records, rung
    # ... and, one trial at a time, ends with exactly the records of the uninterrupted run.
    assert seen.records == reference.records
    for rung in seen.records:
        assert list(seen.records[rung]) == list(reference.records[rung]), rung


def test_no_finished_trial_runs_again_and_a_passed_rung_is_not_judged_again(killed,
                                                                            reference):
    seen = killed
    ids = seen.ids
    first, second = seen.before
    assert first.calls == {t: [0] for t in ids[:5]}
    assert second.calls == {**{t: [0] for t in ids[:8]}, seen.between: [0, 4]}
    for before in seen.before:
        for trial in before.finished:
            assert seen.calls[trial] == before.calls[trial], trial
            assert seen.state[trial].state == before.state[trial].state, trial
            assert seen.state[trial].reason == before.state[trial].reason, trial
    # Trial 4 went on from ckpt-4 and reported step 4 again, without waiting for a verdict
    # there: its next attempt waits at rung 1 and max_t only.
    assert seen.calls[seen.between] == [0, 4]
    assert seen.waits[seen.between] == [ALL_RUNGS, "12 36"]
    record = seen.state[seen.between]
    assert [a.outcome.value for a in record.attempts] == ["driver-lost", "stopped"]
    assert all(t.failed_attempts == 0 for t in seen.state.values())   # a driver's death is free
    for trial in ids:
        if trial not in (seen.between, seen.stopped):
            assert seen.waits[trial] == [ALL_RUNGS], trial


def test_a_stopped_trial_does_not_run_again_after_the_driver_died(killed, reference):
    """Trial 7 heard its stop at rung 0 and checkpointed (ckpt-5); the driver died before
    its completion record. The resumed sweep must end it at step 4, as decided."""
    seen = killed
    trial = seen.stopped
    found = outcome(seen.sweep_dir, trial)
    assert (found["state"], found["last_step"], found["checkpoint"], seen.calls[trial]) == \
        ("STOPPED", 4, "ckpt-5", [0]), \
        f"the stopped trial trained again: calls {seen.calls[trial]}, ended at step " \
        f"{found['last_step']} with {found['checkpoint']}"
    assert found == reference.outcomes[trial]


def test_every_other_trial_ends_as_in_the_uninterrupted_run(killed, reference):
    seen = killed
    assert sorted(finished(seen.sweep_dir)) == sorted(seen.ids)
    assert_ends_as_reference(seen.sweep_dir, reference,
                             [t for t in seen.ids if t != seen.stopped])


# ----------------------------------------------------------------- workers killed (retries)

def test_a_worker_killed_past_a_rung_is_retried_without_a_second_verdict(local_ray, reference,
                                                                        tmp_path):
    path = copy_sweep(tmp_path, SWEEP)
    ids = trial_ids(path)
    # Trial 2 passed rung 0 (latest ckpt-4), trial 6 passed both rungs (latest ckpt-12):
    # each retry reports its rung's step again.
    victims = {ids[2]: 5, ids[6]: 14}
    controls = {trial: Control(path, trial) for trial in victims}
    for trial, step in victims.items():
        controls[trial].arm("pause", step)
    driver = DriverThread(path, tmp_path / "logs")
    before = {}
    for trial in victims:
        paused = controls[trial].wait_paused(alive=driver.alive)
        before[trial] = rung_records(driver.root)
        os.kill(paused["pid"], signal.SIGKILL)
    result, status = driver.join()
    assert status == 0

    assert before[ids[2]][4][ids[2]] == reference.records[4][ids[2]]     # durable at the kill
    assert before[ids[6]][12][ids[6]] == reference.records[12][ids[6]]
    state = {t.id: t for t in result.trials}
    found_calls, found_waits = calls(path), waits(path)
    assert found_calls[ids[2]] == [0, 4] and found_waits[ids[2]] == [ALL_RUNGS, "12 36"]
    assert found_calls[ids[6]] == [0, 12] and found_waits[ids[6]] == [ALL_RUNGS, "36"]
    for trial in victims:
        assert [a.outcome.value for a in state[trial].attempts] == ["worker-died", "finished"]
    for trial in ids:
        if trial not in victims:
            assert found_calls[trial] == [0] and found_waits[trial] == [ALL_RUNGS], trial
    records = rung_records(result.root)
    assert records == reference.records
    assert {r: list(v) for r, v in records.items()} == \
        {r: list(v) for r, v in reference.records.items()}
    assert_ends_as_reference(result.root, reference, ids)


def test_a_stopped_trial_whose_worker_died_is_not_trained_again(local_ray, reference,
                                                               tmp_path):
    """Trial 4 heard its stop at rung 1 (step 12) and checkpointed (ckpt-13); its worker died
    before the completion record. The retry must end it at step 12, as decided."""
    path = copy_sweep(tmp_path, SWEEP)
    ids = trial_ids(path)
    victim = ids[4]
    control = Control(path, victim)
    control.arm("pause", 12)
    driver = DriverThread(path, tmp_path / "logs")
    paused = control.wait_paused(alive=driver.alive)
    records = rung_records(driver.root)
    run = driver.root / victim
    had = {"result.json": (run / "result.json").exists(),
           "ckpt-13": (run / "checkpoints" / "ckpt-13.json").exists()}
    os.kill(paused["pid"], signal.SIGKILL)
    result, status = driver.join()
    assert status == 0
    # Negative control: the stop was on storage, with its checkpoint, not yet the result.
    assert records[12][victim] == reference.records[12][victim]
    assert records[12][victim][1].startswith("asha: rung 1 (step 12)")
    assert had == {"result.json": False, "ckpt-13": True}

    record = next(t for t in result.trials if t.id == victim)
    assert record.attempts[0].outcome.value == "worker-died"
    assert rung_records(result.root) == reference.records
    found = outcome(result.root, victim)
    assert (found["state"], found["last_step"], found["checkpoint"], calls(path)[victim]) == \
        ("STOPPED", 12, "ckpt-13", [0]), \
        f"the stopped trial trained again: calls {calls(path)[victim]}, ended at step " \
        f"{found['last_step']} with {found['checkpoint']}"
    assert_ends_as_reference(result.root, reference, ids)
