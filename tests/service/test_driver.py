"""The driver on a real local Ray (the session's shared instance): retries, ERROR, NaN, a dead
worker, --retry-errored, worker reuse and concurrency; and, without Ray, the sweep folder's
refusals and how a trial table is reconciled with storage."""

import io
import json
import sys
import time

import pytest
from tensorboard.plugins.hparams import api_pb2

from service import cluster
from service.driver import open_sweep_folder, reconcile, run_sweep
from service.messages import Baseline, Outcome, Report, TrialState
from service.search import BasicSearcher
from service.spec import SpecError
from service.storage import (Attempt, LockHeld, SweepLock, SweepPaths, SweepState, TrialRecord,
                             atomic_write_json)
from service.sweep import load_sweep_file
from tests.service.conftest import calls
from tests.service.tb_helpers import hparams_data, written_points


def by_case(result):
    return {t.config["case"]: t for t in result.trials}


def test_failures_nan_and_a_dead_worker(local_ray, sweep_file, tmp_path, capsys):
    path = sweep_file("faulty")
    sweep = load_sweep_file(path)
    result = run_sweep(sweep, storage=str(tmp_path / "logs"), out=io.StringIO())
    status = result.exit_status
    trials = by_case(result)
    assert status == 1
    assert {case: t.state.value for case, t in trials.items()} == {
        "ok": "TERMINATED", "raise_once": "TERMINATED", "always_raise": "ERROR",
        "nan": "STOPPED", "die_once": "TERMINATED"}
    started = calls(path)
    # raise_once failed after its step-4 checkpoint and resumed from global step 5
    assert len(trials["raise_once"].attempts) == 2 and started[trials["raise_once"].id] == [0, 5]
    assert [a.outcome for a in trials["raise_once"].attempts] == ["error", "finished"]
    # max_failures=2: three attempts, each from the previous one's checkpoint
    errored = trials["always_raise"]
    assert [a.outcome for a in errored.attempts] == ["error"] * 3
    assert started[errored.id] == [0, 5, 10]
    error_txt = (result.root / errored.id / "error.txt").read_text()
    assert "RuntimeError: always_raise at step 14" in error_txt
    err = capsys.readouterr().err
    # a script that calls sweep.run() without sys.exit still learns which trials failed and
    # where their tracebacks are
    assert f"gradsweep: 1 trial(s) ended in ERROR: {errored.id}; their tracebacks:\n" \
        f"  {result.root / errored.id / 'error.txt'}\n" in err
    end = hparams_data(result.root / errored.id)["_hparams_/session_end_info"]
    assert end.session_end_info.status == api_pb2.STATUS_FAILURE
    assert trials["nan"].reason == "diverged" and trials["nan"].last_step == 5
    died = trials["die_once"]
    assert [a.outcome for a in died.attempts] == ["worker-died", "finished"]
    assert died.attempts[0].pid != died.attempts[1].pid
    assert "died" in (result.root / died.id / "error.txt").read_text()
    # every run shows each step once, whatever happened to its attempts
    for t in result.trials:
        steps = [s for s, _ in written_points(result.root / t.id)["loss"]]
        assert steps == list(range(t.last_step + 1)), t.id
    saved = SweepState.load(result.root / "state.json").by_id()
    assert {i: t.state for i, t in saved.items()} == {t.id: t.state for t in result.trials}
    assert saved[errored.id].reason == "error"

    # resume: ERROR trials stay ERROR, and run again only with retry_errored
    before = calls(path)
    result = run_sweep(sweep, storage=str(tmp_path / "logs"), resume=True,
                       out=io.StringIO())
    status = result.exit_status
    assert status == 1 and calls(path) == before
    result = run_sweep(sweep, storage=str(tmp_path / "logs"), resume=True,
                       retry_errored=True, out=io.StringIO())
    status = result.exit_status
    # a fresh budget of retries: attempts 4 and 5 go on from the checkpoints and finish
    assert status == 0 and by_case(result)["always_raise"].state == TrialState.TERMINATED
    after = calls(path)
    assert after[errored.id] == [0, 5, 10, 15, 20]
    assert {k: v for k, v in after.items() if k != errored.id} == \
        {k: v for k, v in before.items() if k != errored.id}


def test_workers_are_reused_and_concurrency_is_honoured(local_ray, sweep_file, tmp_path,
                                                       monkeypatch):
    from service import driver

    saves = []
    original = SweepState.save
    monkeypatch.setattr(SweepState, "save",
                        lambda self, path: (saves.append(time.monotonic()), original(self, path)))
    sweep = load_sweep_file(sweep_file("grid12"))
    out = io.StringIO()
    result = run_sweep(sweep, storage=str(tmp_path / "one"), max_concurrent=1, out=out)
    status = result.exit_status
    # state.json: once at the start, then at a bounded rate, then once at the end
    gaps = [b - a for a, b in zip(saves[1:-1], saves[2:-1])]
    assert len(saves) >= 3 and all(gap >= driver.STATE_INTERVAL for gap in gaps)
    assert status == 0 and len(result.trials) == 12
    assert len({t.attempts[0].pid for t in result.trials}) == 1      # one actor, reused
    spans = sorted((t.attempts[0].started, t.attempts[0].ended) for t in result.trials)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    text = out.getvalue()
    assert "\r" not in text and text.splitlines()[0].split()[:2] == ["trial", "state"]
    # the final table is sorted by the metric
    values = [float(line.split()[2]) for line in text.splitlines()[1:]]
    assert values == sorted(values)
    result = run_sweep(sweep, storage=str(tmp_path / "two"), progress=True,
                       out=(out := io.StringIO()))
    status = result.exit_status
    assert status == 0 and 1 <= len({t.attempts[0].pid for t in result.trials}) <= 2
    assert "\r" in out.getvalue() and " done, " in out.getvalue()


def test_a_changed_spec_is_refused_and_restart_keeps_the_old_folder(sweep_file, tmp_path):
    sweep = load_sweep_file(sweep_file("faulty"))
    paths = SweepPaths(tmp_path / "faulty")
    open_sweep_folder(sweep, paths, restart=False, resume=False, out=io.StringIO()).release()
    record = paths.sweep_json.read_bytes()
    changed = sweep.replace(max_failures=1)
    with pytest.raises(SpecError, match=r"max_failures: 2 -> 1.*--restart"):
        run_sweep(changed, storage=str(tmp_path))
    assert paths.sweep_json.read_bytes() == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faulty", "sweepfiles"]
    lock = open_sweep_folder(changed, paths, restart=True, resume=False, out=io.StringIO())
    lock.release()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("faulty.old-")]
    assert len(aside) == 1 and (aside[0] / "sweep.json").read_bytes() == record
    assert json.loads(paths.sweep_json.read_text())["spec"]["max_failures"] == 1


def test_a_second_driver_is_refused_before_anything_runs(sweep_file, tmp_path):
    sweep = load_sweep_file(sweep_file("faulty"))
    paths = SweepPaths(tmp_path / "faulty")
    paths.root.mkdir()
    lock = SweepLock(paths.lock)
    lock.acquire()
    try:
        with pytest.raises(LockHeld, match="pid"):
            run_sweep(sweep, storage=str(tmp_path))
    finally:
        lock.release()
    assert not paths.sweep_json.exists()
    with pytest.raises(Exception, match="not a sweep folder"):
        run_sweep(sweep, storage=str(tmp_path / "elsewhere"), resume=True)


def test_reconcile_trusts_storage_and_a_killed_driver_costs_no_attempt(sweep_file, tmp_path):
    sweep = load_sweep_file(sweep_file("faulty"))
    paths = SweepPaths(tmp_path / "faulty")
    paths.root.mkdir()
    specs = sweep.trials()
    now = time.time()
    records = [
        TrialRecord(specs[0].id, 0, specs[0].config, TrialState.RUNNING,
                    attempts=[Attempt("0.1", started=now - 500, outcome=Outcome.ERROR),
                              Attempt("0.2", started=now - 100)]),
        TrialRecord(specs[1].id, 1, specs[1].config, TrialState.PENDING),
        TrialRecord(specs[2].id, 2, specs[2].config, TrialState.TERMINATED),
        TrialRecord(specs[3].id, 3, specs[3].config, TrialState.ERROR, reason="error"),
    ]
    SweepState(sweep.name, sweep.spec_hash(), records).save(paths.state_json)
    paths.trial(specs[1].id).dir.mkdir()
    atomic_write_json(paths.trial(specs[1].id).result_json,
                      {"state": "STOPPED", "reason": "diverged", "last_step": 5,
                       "last_metrics": {"loss": float("nan")}, "best_metrics": {}})
    paths.trial(specs[0].id).dir.mkdir()
    paths.trial(specs[0].id).results_jsonl.write_text(
        json.dumps({"step": 0, "time": now - 90, "metrics": {"loss": 1.0}}) + "\n{\"step\": 1, ")
    searcher = BasicSearcher()
    searcher.setup(sweep.spec)
    state, _ = reconcile(sweep, paths, searcher, retry_errored=False)
    got = state.by_id()
    assert got[specs[0].id].state == TrialState.PENDING
    assert [a.outcome for a in got[specs[0].id].attempts] == ["error", "driver-lost"]
    # the lost attempt ran until its last durable report, not until the driver came back
    assert got[specs[0].id].attempts[1].ended == now - 90
    assert got[specs[0].id].failed_attempts == 1
    assert (got[specs[1].id].state, got[specs[1].id].reason) == (TrialState.STOPPED, "diverged")
    assert got[specs[2].id].state == TrialState.PENDING     # no completion record on storage
    assert got[specs[3].id].state == TrialState.ERROR
    assert got[specs[4].id].state == TrialState.PENDING     # new in the table
    state, base = reconcile(sweep, paths, searcher, retry_errored=True)
    assert state.by_id()[specs[3].id].state == TrialState.PENDING and base == {specs[3].id: 0}


def test_cluster_options():
    assert cluster.actor_options({"cpu": 2.0, "gpu": 1.0, "memory": 1e9, "disk": 1.0}) == {
        "num_cpus": 2.0, "num_gpus": 1.0, "memory": 1e9, "resources": {"disk": 1.0}}
    assert cluster.default_concurrency(8.0, {"cpu": 3.0}) == 2
    assert cluster.default_concurrency(2.0, {"cpu": 4.0}) == 1
    assert cluster.resolve_address("local") == "local"
    with pytest.raises(ValueError, match="address"):
        cluster.resolve_address(" ")


def test_a_worker_streams_reports_while_running_and_stops_when_asked(local_ray, sweep_file,
                                                                      tmp_path):
    import ray

    from service.trial import INTERRUPT, TrialTask, write_fence
    from service.worker import worker_class

    sweep = load_sweep_file(sweep_file("slow"))
    spec = next(t for t in sweep.trials() if t.config["seed"] == 2)    # 180 steps, ~4 s
    task = TrialTask(sweep_dir=str(tmp_path), trial_id=spec.id, config=spec.config,
                     attempt_id="a1", metric=sweep.metric, mode=sweep.mode)
    write_fence(task.paths, "a1")
    worker = worker_class().options(num_cpus=1).remote(1.0)
    try:
        assert ray.get(worker.info.remote())["blas_threads"] == [1]   # follows its one CPU
        run = worker.run.remote(task, sweep.train)
        streamed, deadline = [], time.monotonic() + 60
        while not any(isinstance(item, Report) and item.step >= 10 for item in streamed):
            assert time.monotonic() < deadline
            streamed += ray.get(worker.poll.remote("a1"))
            time.sleep(0.05)
        assert ray.get(worker.poll.remote("another attempt")) == []
        ready, _ = ray.wait([run], timeout=0)
        assert not ready                                   # live results, trial still running
        assert isinstance(streamed[0], Baseline)
        assert [i.step for i in streamed[1:11]] == list(range(10))
        ray.get(worker.poll.remote("a1", INTERRUPT))
        result = ray.get(run, timeout=30)
    finally:
        ray.kill(worker)
    assert result.outcome == Outcome.INTERRUPTED and result.summary["last_step"] < 170
    assert result.checkpoint.path.endswith(f"ckpt-{result.summary['last_step'] + 1}")


def test_resources_no_node_has_are_refused(local_ray, sweep_file, tmp_path):
    sweep = load_sweep_file(sweep_file("grid12")).replace(resources={"cpu": 64})
    with pytest.raises(SpecError, match=r"resources: .*cpu 64 \(the largest node has 2\)"):
        run_sweep(sweep, storage=str(tmp_path), out=io.StringIO())


def talkative(config, trial):
    print(f"starting seed {config['seed']}")
    for step in range(3):
        print(f"step {step}", end=" ")
        print("done")
        trial.report(step, loss=1.0 / (step + 1))
    print("a warning", file=sys.stderr)
    print("no newline at the end", end="")


def test_prints_from_train_reach_the_terminal_prefixed_and_stdout_txt(local_ray, tmp_path,
                                                                       capsys):
    from ray import cloudpickle

    from service import Sweep, grid

    sweep = Sweep(name="talk", train=talkative, space={"seed": grid([0, 1])}, metric="loss")
    out = io.StringIO()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        result = run_sweep(sweep, storage=str(tmp_path), out=out, progress=True)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert result.exit_status == 0
    printed, err = out.getvalue(), capsys.readouterr().err
    for t in result.trials:
        lines = [line for line in printed.replace("\r", "\n").splitlines()
                 if line.startswith(f"({t.id}) ")]
        assert lines == [f"({t.id}) starting seed {t.config['seed']}",
                         f"({t.id}) step 0 done", f"({t.id}) step 1 done",
                         f"({t.id}) step 2 done", f"({t.id}) no newline at the end"], printed
        assert f"({t.id}) a warning\n" in err
        copy = (tmp_path / "talk" / t.id / "stdout.txt").read_text()
        assert copy == (f"starting seed {t.config['seed']}\nstep 0 done\nstep 1 done\n"
                        "step 2 done\na warning\nno newline at the end")


def test_in_a_notebook_progress_is_a_bar_updated_in_place(local_ray, sweep_file, tmp_path,
                                                          monkeypatch):
    from tqdm import tqdm

    import service.driver

    bars = []

    def bar(total):
        bars.append(tqdm(total=total, file=io.StringIO(), mininterval=0))
        return bars[-1]

    monkeypatch.setattr(service.driver, "in_notebook", lambda: True)
    monkeypatch.setattr(service.driver, "notebook_bar", bar)
    out = io.StringIO()            # a notebook's stdout is no terminal
    result = run_sweep(load_sweep_file(sweep_file("grid12")), storage=str(tmp_path), out=out)
    assert result.exit_status == 0
    [shown] = bars
    assert shown.total == 12 and shown.n == 12
    drawn = shown.fp.getvalue()
    assert "12/12" in drawn and "best loss" in drawn and "0 failed" in drawn
    assert "\r" not in out.getvalue()      # no status line rewritten next to the bar
