"""A driver killed or interrupted mid-sweep, then resumed (driver subprocesses with their own
embedded Ray): nothing finished runs again, every run holds each step once in TensorBoard's
Python readers and in the ``tensorboard`` server, and the results equal an uninterrupted
run's. A negative control resumes without the rewrite and must be caught."""

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import service.events
from service.driver import run_sweep
from service.events import RunWriter
from service.sweep import load_sweep_file
from service.messages import TrialState
from service.storage import SweepState
import service.trial
from service.trial import TrialTask, run_attempt, write_fence
from tests.service.helpers import with_restore_point
from tests.drivers import reap, start_driver
from tests.service.conftest import calls
from tests.service.tb_helpers import TensorBoardServer, scalar_points, written_points

TAGS = ("loss", "loss/full", "fresh/loss")


def wait_for(predicate, proc, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the driver ended early ({proc.returncode}):\n"
                                 f"{proc.communicate()[1]}")
        time.sleep(0.02)
    raise AssertionError("the sweep never reached the expected point")


def progress(trial_dir: Path) -> tuple[int, int, bool]:
    """(last reported step or -1, latest checkpoint's global step or 0, finished)."""
    last = -1
    try:
        for line in (trial_dir / "results.jsonl").read_text().splitlines():
            try:
                last = max(last, json.loads(line)["step"])
            except ValueError:
                pass
    except FileNotFoundError:
        pass
    steps = [int(p.stem.split("-")[1]) for p in (trial_dir / "checkpoints").glob("ckpt-*.json")]
    return last, max(steps, default=0), (trial_dir / "result.json").exists()


def trial_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir()) if sweep_dir.is_dir() else []


def mid_sweep(sweep_dir: Path) -> bool:
    """A trial finished and another is past its first checkpoint (and far enough from its
    end that the second its workers outlive a killed driver cannot finish it)."""
    states = [progress(p) for p in trial_dirs(sweep_dir)]
    return any(done for _, _, done in states) and \
        any(not done and ckpt == 10 for _, ckpt, done in states)


def control_trial(sweep_dir: Path) -> tuple[str, int]:
    """A trial for the negative control and the step its resume will start from: one that
    reported past its latest checkpoint, so a resume without the rewrite shows steps twice
    (if the kill came right after a checkpoint, the copy's newest checkpoint is dropped)."""
    candidates = []
    for p in trial_dirs(sweep_dir):
        last, ckpt, done = progress(p)
        if not done and ckpt > 0:
            candidates.append((last - ckpt, p))
    beyond, trial = max(candidates, key=lambda c: c[0])
    if beyond < 0:
        newest = max((trial / "checkpoints").glob("ckpt-*.json"),
                     key=lambda f: int(f.stem.split("-")[1]))
        newest.unlink()
        newest.with_suffix(".npz").unlink()
    last, ckpt, _ = progress(trial)
    assert 0 < ckpt <= last
    return trial.name, ckpt


# ----------------------------------------------------------------- checking runs

def step_problems(points: dict, steps: int, fresh_until: int) -> list[str]:
    """What is wrong with a run's points ``{tag: [(step, value)]}`` of a trial of ``steps``
    steps: a step twice, a step missing, or a point of ``fresh/loss`` (reported only by
    attempts that started from 0) at or above ``fresh_until``, the step the first resume
    continued from."""
    problems = []
    for tag in TAGS:
        found = [step for step, _ in points.get(tag, [])]
        twice = sorted(s for s, n in collections.Counter(found).items() if n > 1)
        if twice:
            problems.append(f"{tag}: steps shown twice {twice}")
        expected = list(range(fresh_until if tag == "fresh/loss" else steps))
        if sorted(set(found)) != expected:
            problems.append(f"{tag}: steps {sorted(set(found))} instead of 0..{len(expected) - 1}")
    return problems


def fresh_until(starts: list[int], steps: int) -> int:
    """Where ``fresh/loss`` ends: the first resumed attempt's start step (all steps if none)."""
    return next((s for s in starts if s > 0), steps)


def server_points(tb: TensorBoardServer, runs: list[str]) -> dict:
    """``{run: {tag: [(step, value)]}}`` for ``runs`` from the server, once it settled."""
    def fetch():
        found = {run: {} for run in runs}
        for tag in TAGS:
            body = urllib.parse.urlencode([("tag", tag), *[("runs", r) for r in runs]]).encode()
            request = urllib.request.Request(tb.url + "/data/plugin/scalars/scalars_multirun",
                                             data=body)
            with urllib.request.urlopen(request, timeout=10) as response:
                for run, rows in json.loads(response.read()).items():
                    found[run][tag] = [(int(step), value) for _, step, value in rows]
        return found if all(found[run].get("loss") for run in runs) else None
    return tb.settled(fetch, timeout=30)


def resume_without_rewrite(sweep_path: Path, sweep_dir: Path, trial_id: str, monkeypatch):
    """The negative control: resume one trial in-process the way a naive service would,
    opening its writer without the rewrite and appending to results.jsonl as it is."""
    sweep = load_sweep_file(sweep_path)
    monkeypatch.setattr(service.events, "RunWriter",
                        lambda logdir, resume_step=None, guard=None: RunWriter(logdir,
                                                                               guard=guard))
    monkeypatch.setattr(service.trial, "clean_results", lambda path, step, summary: None)
    spec = sweep.spec
    task = TrialTask(sweep_dir=str(sweep_dir), trial_id=trial_id,
                     config=next(t.config for t in sweep.trials() if t.id == trial_id),
                     attempt_id="control", metric=spec.metric, mode=spec.mode,
                     checkpoint_every=spec.checkpoint_every)
    write_fence(task.paths, "control")
    task = with_restore_point(task)
    assert run_attempt(task, sweep.train).outcome == "finished"


# The control restores in this process, from checkpoints written by Ray workers (other
# thread settings) and past the newest one it deleted: the Saver says so, rightly.
@pytest.mark.filterwarnings("ignore::engine.checkpoint.CheckpointWarning")
def test_a_killed_driver_resumes_without_rerunning_or_duplicating(sweep_file, tmp_path,
                                                                  monkeypatch):
    path = sweep_file("slow")
    sweep_dir = tmp_path / "logs" / "slow"
    driver = start_driver(["launch", str(path), "--storage", str(tmp_path / "logs")], tmp_path)
    try:
        wait_for(lambda: mid_sweep(sweep_dir), driver)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        time.sleep(3)       # the killed driver's workers go on for about a second
    finally:
        reap(driver)
    snapshot = {p.name: progress(p) for p in trial_dirs(sweep_dir)}
    finished = {name for name, (_, _, done) in snapshot.items() if done}
    past = [name for name, (_, ckpt, done) in snapshot.items() if not done and ckpt > 0]
    assert finished and past
    control_dir = tmp_path / "control" / "slow"
    shutil.copytree(sweep_dir, control_dir)
    started_before = calls(path)

    resumed = subprocess.run([sys.executable, "-m", "service", "resume", str(sweep_dir)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=240,
                             start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr
    state = SweepState.load(sweep_dir / "state.json")
    assert [t.state for t in state.trials] == [TrialState.TERMINATED] * 6
    started = calls(path)
    assert {t: started[t] for t in finished} == {t: [0] for t in finished}   # not run again
    for trial in past:                    # continued from their checkpoints
        assert started[trial] == started_before[trial] + [snapshot[trial][1]]
    # a killed driver costs no attempt: its attempts ended "driver-lost", none failed
    assert all(t.failed_attempts == 0 for t in state.trials)
    assert any(a.outcome == "driver-lost" for t in state.trials for a in t.attempts)

    # the negative control: the same resume without the rewrite
    control, control_until = control_trial(control_dir)
    resume_without_rewrite(path, control_dir, control, monkeypatch)
    steps = {t.id: t.last_step + 1 for t in state.trials}
    assert step_problems(written_points(control_dir / control), steps[control], control_until)
    control_run = f"control/slow/{control}"

    runs = {f"logs/slow/{t}": (n, fresh_until(started[t], n)) for t, n in steps.items()}
    for run, (n, until) in runs.items():
        raw, loaded = written_points(tmp_path / run), scalar_points(tmp_path / run)
        assert step_problems(raw, n, until) == [], run
        assert step_problems(loaded, n, until) == [], run
        assert {t: sorted(p) for t, p in raw.items()} == {t: sorted(p) for t, p in loaded.items()}
    # over HTTP: the default loader (the Rust data server) and the Python loader
    for load_fast in ("auto", "false"):
        with TensorBoardServer(tmp_path, load_fast=load_fast) as tb:
            served = server_points(tb, [*runs, control_run])
        for run, (n, until) in runs.items():
            assert step_problems(served[run], n, until) == [], (load_fast, run)
            raw = written_points(tmp_path / run)
            assert {t: sorted(served[run][t]) for t in TAGS} == \
                {t: sorted(raw[t]) for t in TAGS}, (load_fast, run)
        assert step_problems(served[control_run], steps[control], control_until), load_fast


def test_ctrl_c_then_resume_gives_the_results_of_an_uninterrupted_run(local_ray, sweep_file,
                                                                       tmp_path):
    path = sweep_file("slow")
    path.write_text(path.read_text().replace("SLEEP = 0.02", "SLEEP = 0.005"))  # no kill here
    reference_file = tmp_path / "reference" / "slow.py"
    reference_file.parent.mkdir()
    shutil.copy(path, reference_file)
    reference = run_sweep(load_sweep_file(reference_file),
                          storage=str(tmp_path / "reference" / "logs"), progress=False)
    status = reference.exit_status
    assert status == 0

    sweep_dir = tmp_path / "logs" / "slow"
    driver = start_driver(["launch", str(path), "--storage", str(tmp_path / "logs")], tmp_path)
    try:
        wait_for(lambda: mid_sweep(sweep_dir), driver)
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=60)
    finally:
        reap(driver)
    assert driver.returncode == 130, err
    assert f"python -m service resume {sweep_dir}" in err
    interrupted = SweepState.load(sweep_dir / "state.json")
    assert TrialState.PENDING in {t.state for t in interrupted.trials}
    assert TrialState.ERROR not in {t.state for t in interrupted.trials}
    stopped = [t for t in interrupted.trials if t.attempts
               and t.attempts[-1].outcome == "interrupted"]
    assert stopped and all(t.checkpoint for t in stopped)     # checkpointed as they stopped

    result = run_sweep(load_sweep_file(path), storage=str(tmp_path / "logs"),
                       resume=True, progress=False)
    status = result.exit_status
    assert status == 0
    assert all(len(calls(path)[t.id]) == 2 for t in stopped)
    def final(trial):   # fresh/loss differs by design: resumed attempts do not report it
        return (trial.state, trial.last_step,
                *({k: v for k, v in m.items() if k != "fresh/loss"}
                  for m in (trial.last_metrics, trial.best_metrics)))

    assert {t.id: final(t) for t in result.trials} == {t.id: final(t) for t in reference.trials}
    for t in result.trials:
        ours = [(r["step"], r["metrics"]["loss/full"]) for r in map(
            json.loads, (sweep_dir / t.id / "results.jsonl").read_text().splitlines())]
        theirs = [(r["step"], r["metrics"]["loss/full"]) for r in map(
            json.loads, (reference.root / t.id / "results.jsonl").read_text().splitlines())]
        assert ours == theirs, t.id
        assert written_points(sweep_dir / t.id)["loss"] == \
            written_points(reference.root / t.id)["loss"]


def test_a_second_ctrl_c_exits_at_once_and_the_sweep_still_resumes(local_ray, sweep_file,
                                                                   tmp_path):
    import threading

    path = sweep_file("slow")
    # Trials wind down slowly once asked to stop, so that the second Ctrl-C surely lands
    # while the first one's graceful stop is in progress (a stop reaches them in milliseconds).
    # The pause comes before the stop checkpoint: that checkpoint ends the trial.
    path.write_text(path.read_text().replace("SLEEP = 0.02", "SLEEP = 0.005").replace(
        "            trial.checkpoint(sess, step)\n",
        "            time.sleep(2.0 if trial.stop_reason else 0)\n"
        "            trial.checkpoint(sess, step)\n"))
    assert "time.sleep(2.0" in path.read_text()
    sweep_dir = tmp_path / "logs" / "slow"
    timings = {}

    def press_ctrl_c_twice():
        deadline = time.monotonic() + 60
        while not any(progress(p)[1] >= 10 for p in trial_dirs(sweep_dir)):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        timings["second"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)

    # A press outside run_sweep (the sweep ended first) is recorded, not pytest's to handle.
    stray = []
    previous = signal.signal(signal.SIGINT, lambda *_: stray.append(time.monotonic()))
    try:
        presser = threading.Thread(target=press_ctrl_c_twice)
        presser.start()
        result = run_sweep(load_sweep_file(path), storage=str(tmp_path / "logs"),
                           progress=False)
        status = result.exit_status
        returned = time.monotonic()
        presser.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stray == []
    assert status == 130 and returned - timings["second"] < 5
    state = SweepState.load(sweep_dir / "state.json")
    assert {t.state for t in state.trials} <= {TrialState.PENDING, TrialState.TERMINATED}
    assert any(t.attempts and t.attempts[-1].outcome == "interrupted" for t in state.trials)
    # the workers were killed in the middle of a step: resume still gives clean runs
    result = run_sweep(load_sweep_file(path), storage=str(tmp_path / "logs"),
                       resume=True, progress=False)
    status = result.exit_status
    assert status == 0
    for t in result.trials:
        starts = calls(path)[t.id]
        problems = step_problems(written_points(sweep_dir / t.id), t.last_step + 1,
                                 fresh_until(starts, t.last_step + 1))
        assert problems == [], t.id


def test_sigterm_stops_like_ctrl_c(sweep_file, tmp_path):
    """``kill``, ``ray job stop`` and service managers send SIGTERM: the driver checkpoints
    the running trials and leaves them PENDING, as on Ctrl-C, instead of dying unseen."""
    path = sweep_file("slow")
    sweep_dir = tmp_path / "logs" / "slow"
    driver = start_driver(["launch", str(path), "--storage", str(tmp_path / "logs")], tmp_path)
    try:
        wait_for(lambda: mid_sweep(sweep_dir), driver)
        driver.send_signal(signal.SIGTERM)
        out, err = driver.communicate(timeout=60)
    finally:
        reap(driver)
    assert driver.returncode == 130, err
    assert "gradsweep: stopping (SIGTERM)" in err
    assert f"python -m service resume {sweep_dir}" in err
    state = SweepState.load(sweep_dir / "state.json")
    stopped = [t for t in state.trials if t.attempts and t.attempts[-1].outcome == "interrupted"]
    assert stopped and all(t.state == TrialState.PENDING and t.checkpoint for t in stopped)
