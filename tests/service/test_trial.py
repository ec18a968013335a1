"""The trial context and one attempt's life, run in-process (no Ray): reports, checkpoints,
restore points, cleaning on resume, stop rules, failures and attempt fencing. Runs are read
back with TensorBoard's own readers."""

import json
import math
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import api_pb2

import engine as en
from engine.checkpoint import files as checkpoint_files
from service.trial import (INTERRUPT, StaleAttempt, Trial, TrialStopped, TrialTask, run_attempt,
                           write_fence)
from tests.service.helpers import with_restore_point
from tests.service.tb_helpers import hparam_values, hparams_data, load_run, written_points

STEPS = 20


def make_task(tmp_path, attempt="a1", **options):
    options = {"checkpoint_every": 5, "keep_checkpoints": 3, **options}
    task = TrialTask(sweep_dir=str(tmp_path / "sweep"), trial_id="0_lr=0.1", config={"lr": 0.1},
                     attempt_id=attempt, metric="loss", mode="min", **options)
    write_fence(task.paths, attempt)
    return with_restore_point(task)


def model(config):
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    logits = en.layers.dense(x, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    train_op = en.optim.SGD(lr=config["lr"], momentum=0.9).minimize(loss)
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-1, 1, (32, 2)).astype(np.float32)
    feed = {x: inputs, y: (inputs[:, :1] > 0).astype(np.float32)}
    return loss, train_op, feed


def make_train(fail_at=None, restore=True, steps=STEPS, nan_at=None, hook=None, calls=None):
    """A train function; ``fail_at`` raises after reporting that step (first call only)."""
    def train(config, trial):
        loss, train_op, feed = model(config)
        sess = en.Session(seed=0)
        trial.log_graph(loss)
        start = trial.restore(sess) if restore else 0
        if calls is not None:
            calls.append(start)
        for step in range(start, steps):
            _, value = sess.run([train_op, loss], feed=feed)
            if step == nan_at:
                value = float("nan")
            trial.report(step, loss=value, extra=float(step))
            if hook is not None:
                hook(trial, step)
            if trial.should_checkpoint(step):
                trial.checkpoint(sess, step)
            if step == fail_at and len(calls or [0]) == 1:
                raise RuntimeError(f"boom at step {step}")
    return train


def results_steps(task):
    return [json.loads(line)["step"] for line in task.paths.results_jsonl.read_text().splitlines()]


def session_status(run_dir):
    data = hparams_data(run_dir)
    end = data.get("_hparams_/session_end_info")
    return None if end is None else end.session_end_info.status


def test_a_fresh_attempt_writes_a_complete_run(tmp_path):
    task = make_task(tmp_path)
    result = run_attempt(task, make_train())
    assert result.outcome == "finished" and result.state == "TERMINATED"
    assert result.summary["last_step"] == STEPS - 1
    assert result.checkpoint.path == "0_lr=0.1/checkpoints/ckpt-20"
    record = json.loads(task.paths.result_json.read_text())
    assert record["state"] == "TERMINATED" and record["attempt"] == "a1"
    assert record["last_metrics"]["loss"] == result.summary["last_metrics"]["loss"]
    assert results_steps(task) == list(range(STEPS))
    run = load_run(task.paths.dir)
    tags = run.Tags()
    assert sorted(tags[event_accumulator.SCALARS]) == ["extra", "loss"]
    assert [e.step for e in run.Scalars("loss")] == list(range(STEPS))
    assert tags[event_accumulator.GRAPH]
    assert {n.name for n in run.Graph().node} >= {"out/kernel", "out/bias", "x", "y"}
    # histograms of the model's variables (not the optimizer's slots) at each checkpoint step,
    # under one prefix that keeps them apart from the metrics
    assert sorted(tags[event_accumulator.HISTOGRAMS]) == ["variables/out/bias",
                                                          "variables/out/kernel"]
    assert [e.step for e in run.Histograms("variables/out/kernel")] == [4, 9, 14, 19]
    starts = hparams_data(task.paths.dir)["_hparams_/session_start_info"].session_start_info
    assert hparam_values(starts) == {"lr": 0.1} and starts.group_name == "0_lr=0.1"
    assert session_status(task.paths.dir) == api_pb2.STATUS_SUCCESS
    kept = sorted(p.name for p in task.paths.checkpoints.glob("*.npz"))
    assert kept == ["ckpt-10.npz", "ckpt-15.npz", "ckpt-20.npz"]   # keep_checkpoints=3
    assert json.loads(task.paths.params_json.read_text()) == {"lr": 0.1}


def test_a_retry_resumes_from_the_checkpoint_and_each_step_stays_once(tmp_path):
    reference_task = make_task(tmp_path / "reference")
    run_attempt(reference_task, make_train())
    task = make_task(tmp_path)
    calls = []
    first = run_attempt(task, make_train(fail_at=12, calls=calls))
    assert first.outcome == "error" and "boom at step 12" in first.error
    assert "RuntimeError: boom at step 12" in task.paths.error_txt.read_text()
    assert not task.paths.result_json.exists()
    assert session_status(task.paths.dir) is None          # a retry follows: no session end
    write_fence(task.paths, "a2")
    second = run_attempt(make_task(tmp_path, attempt="a2"), make_train(calls=calls))
    assert second.outcome == "finished" and calls == [0, 10]
    assert results_steps(task) == list(range(STEPS))
    points = written_points(task.paths.dir)
    assert [s for s, _ in points["loss"]] == list(range(STEPS))
    # bit for bit what an uninterrupted run reports
    assert points["loss"] == written_points(reference_task.paths.dir)["loss"]
    assert list(hparams_data(task.paths.dir)) == ["_hparams_/session_start_info",
                                                  "_hparams_/session_end_info"]
    assert len([e for e in load_run(task.paths.dir).Histograms("variables/out/kernel")]) == 4


def test_a_resumed_attempt_reads_its_checkpoint_data_twice(tmp_path, monkeypatch):
    # Once to choose it (verified), once to restore it (verified again as it is loaded).
    task = make_task(tmp_path)
    calls = []
    run_attempt(task, make_train(fail_at=12, calls=calls))
    reads = []
    real_read = checkpoint_files._read_bytes
    monkeypatch.setattr(checkpoint_files, "_read_bytes",
                        lambda file, what: (reads.append(os.path.basename(file)),
                                            real_read(file, what))[1])
    write_fence(task.paths, "a2")
    result = run_attempt(make_task(tmp_path, attempt="a2"), make_train(calls=calls))
    assert result.outcome == "finished" and calls == [0, 10]
    assert [name for name in reads if name.endswith(".npz")] == ["ckpt-10.npz"] * 2


def test_restore_falls_back_past_a_damaged_checkpoint(tmp_path):
    task = make_task(tmp_path)
    calls = []
    run_attempt(task, make_train(fail_at=17, calls=calls))
    damaged = task.paths.checkpoints / "ckpt-15.npz"
    data = bytearray(damaged.read_bytes())
    data[-10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="ckpt-15"):
        result = run_attempt(make_task(tmp_path, attempt="a2"), make_train(calls=calls))
    assert result.outcome == "finished" and calls == [0, 10]
    assert [s for s, _ in written_points(task.paths.dir)["loss"]] == list(range(STEPS))
    assert results_steps(task) == list(range(STEPS))


def test_a_train_that_never_restores_is_cleaned_from_zero(tmp_path):
    task = make_task(tmp_path)
    calls = []
    run_attempt(task, make_train(fail_at=12, restore=False, calls=calls))
    result = run_attempt(make_task(tmp_path, attempt="a2"), make_train(restore=False, calls=calls))
    assert result.outcome == "finished" and calls == [0, 0]
    assert [s for s, _ in written_points(task.paths.dir)["loss"]] == list(range(STEPS))
    assert results_steps(task) == list(range(STEPS))


def test_a_superseded_attempt_writes_nothing_more(tmp_path):
    task = make_task(tmp_path)

    def take_over(trial, step):
        if step == 3:   # the driver starts another attempt while this one still runs
            write_fence(task.paths, "a2")

    result = run_attempt(task, make_train(hook=take_over))
    assert result.outcome == "stale"
    # step 3's scalars were still held (a step may be reported again) when the attempt was
    # superseded: they are never written
    assert [s for s, _ in written_points(task.paths.dir)["loss"]] == [0, 1, 2]
    assert results_steps(task) == [0, 1, 2, 3]
    assert not task.paths.result_json.exists() and not task.paths.error_txt.exists()
    assert not task.paths.checkpoints.exists()          # the step-4 checkpoint never happened
    # and a context whose fence is gone refuses at once
    task.paths.attempt_file.unlink()
    with pytest.raises(StaleAttempt):
        Trial(task)


@pytest.mark.parametrize("stop, state, reason, last_step, checkpoint", [
    ({"max_steps": 8}, "TERMINATED", None, 7, "ckpt-8"),
    ({"metric_threshold": 100.0}, "STOPPED", "early-stop", 0, "ckpt-1"),
])
def test_stop_rules_stop_at_the_next_report_after_a_checkpoint(tmp_path, stop, state, reason,
                                                              last_step, checkpoint):
    task = make_task(tmp_path, stop=stop, checkpoint_every=100)
    result = run_attempt(task, make_train())
    assert (result.state, result.reason, result.summary["last_step"]) == (state, reason, last_step)
    assert result.checkpoint.path.endswith(checkpoint)    # should_checkpoint turned true
    assert results_steps(task) == list(range(last_step + 1))
    assert json.loads(task.paths.result_json.read_text())["state"] == state
    assert session_status(task.paths.dir) == api_pb2.STATUS_SUCCESS


def test_nan_stops_the_trial_as_diverged_unless_kept(tmp_path):
    task = make_task(tmp_path / "stop")
    result = run_attempt(task, make_train(nan_at=6))
    assert (result.state, result.reason, result.summary["last_step"]) == \
        ("STOPPED", "diverged", 6)
    assert math.isnan(result.summary["last_metrics"]["loss"])
    assert result.checkpoint.path.endswith("ckpt-5")      # no checkpoint of a diverged model
    assert session_status(task.paths.dir) == api_pb2.STATUS_SUCCESS
    status_text = load_run(task.paths.dir).Tensors("status")[0].tensor_proto.string_val[0]
    assert status_text.decode() == "success: diverged"
    kept = make_task(tmp_path / "keep", on_nan="keep")
    result = run_attempt(kept, make_train(nan_at=6))
    assert (result.state, result.summary["last_step"]) == ("TERMINATED", STEPS - 1)
    assert result.summary["best_metrics"]["step"] != 6          # NaN is never the best


def test_the_time_budget_stops_a_trial_counting_earlier_attempts(tmp_path):
    import time

    task = make_task(tmp_path / "a", stop={"time_budget_s": 0.3})
    began = time.monotonic()
    result = run_attempt(task, make_train(steps=10_000,
                                          hook=lambda trial, step: time.sleep(0.01)))
    assert (result.state, result.reason) == ("STOPPED", "time-budget")
    assert time.monotonic() - began >= 0.3 and result.summary["last_step"] < 1_000
    # earlier attempts used the whole budget: the first report stops this one
    task = make_task(tmp_path / "b", stop={"time_budget_s": 30.0}, time_used=30.0)
    result = run_attempt(task, make_train(steps=10_000))
    assert (result.state, result.reason, result.summary["last_step"]) == \
        ("STOPPED", "time-budget", 0)


def test_an_interrupt_checkpoints_and_leaves_the_trial_pending(tmp_path):
    task = make_task(tmp_path, checkpoint_every=100)

    def ctrl_c(trial, step):
        if step == 3:
            trial.request_stop(INTERRUPT)

    result = run_attempt(task, make_train(hook=ctrl_c))
    assert (result.outcome, result.state, result.summary["last_step"]) == \
        ("interrupted", "PENDING", 3)
    assert result.checkpoint.path.endswith("ckpt-4")
    assert not task.paths.result_json.exists()
    assert session_status(task.paths.dir) is None


def test_a_failure_without_retries_left_marks_the_run_failed(tmp_path):
    task = make_task(tmp_path, last_chance=True)
    result = run_attempt(task, make_train(fail_at=2, calls=[]))
    assert result.outcome == "error" and result.summary["last_step"] == 2
    assert session_status(task.paths.dir) == api_pb2.STATUS_FAILURE


def test_report_merges_a_step_and_names_a_bad_metric(tmp_path):
    task = make_task(tmp_path)
    trial = Trial(task)
    trial.report(0, loss=2.0)
    trial.report(0, {"loss/val": 3.0})
    trial.report(1, loss=1.0, accuracy=np.float32(0.5))
    assert trial.summary.last_metrics == {"loss": 1.0, "accuracy": 0.5}
    assert trial.summary.best_metrics == {"step": 1, "loss": 1.0, "accuracy": 0.5}
    with pytest.raises(TypeError, match="'accuracy'"):
        trial.report(2, accuracy="high")
    with pytest.raises(ValueError, match="step"):
        trial.report(-1, loss=1.0)
    with pytest.raises(RuntimeError, match="before the first report"):
        trial.restore(en.Session())
    trial.request_stop(INTERRUPT)
    trial.report(3, loss=0.5)                 # the step in progress still counts ...
    assert trial.should_checkpoint(3)
    with pytest.raises(TrialStopped):         # ... the next report stops the trial
        trial.report(4, loss=0.4)
    trial.close()
    assert results_steps(task) == [0, 0, 1, 3]


def test_a_step_reported_twice_shows_each_tag_once_with_the_later_value(tmp_path):
    task = make_task(tmp_path)
    trial = Trial(task)
    trial.report(0, loss=2.0, accuracy=0.1)
    trial.report(0, {"loss": 1.5, "loss/val": 3.0})     # same step: merged, later value wins
    trial.report(1, loss=1.0)
    trial.report(1, loss=0.75)
    trial.close()
    points = written_points(task.paths.dir)
    assert points["loss"] == [(0, 1.5), (1, 0.75)]
    assert points["accuracy"] == [(0, pytest.approx(0.1))] and points["loss/val"] == [(0, 3.0)]
    assert results_steps(task) == [0, 0, 1, 1]           # one line per report call


@pytest.mark.parametrize("histograms, expected", [
    ("all", ["variables/SGD/out/bias/momentum", "variables/SGD/out/kernel/momentum",
             "variables/out/bias", "variables/out/kernel"]),
    ("none", []),
])
def test_optimizer_slots_histograms_on_request(tmp_path, histograms, expected):
    def train(config, trial):
        loss, train_op, feed = model(config)
        sess = en.Session(seed=0)
        for step, _ in trial.steps(sess, 10, histograms=histograms):
            _, value = sess.run([train_op, loss], feed=feed)
            trial.report(step, loss=value)

    task = make_task(tmp_path)
    assert run_attempt(task, train).outcome == "finished"
    assert sorted(load_run(task.paths.dir).Tags()[event_accumulator.HISTOGRAMS]) == expected
    with pytest.raises(ValueError, match="histograms must be one of model, all, none"):
        Trial(task).checkpoint(en.Session(seed=0), 0, histograms="slots")


def test_a_stopped_trial_that_reports_rarely_ends_at_its_stop_checkpoint(tmp_path):
    """Reports every 5 steps; the stop rule fires at the report of step 9: the checkpoint
    a stop asks for is the last thing the trial does (no step trains after it, no more
    checkpoints)."""
    trained = []

    def train(config, trial):
        loss, train_op, feed = model(config)
        sess = en.Session(seed=0)
        for step, evaluate in trial.steps(sess, STEPS, eval_every=5):
            sess.run(train_op, feed=feed)
            trained.append(step)
            if evaluate:
                trial.report(step, loss=0.0 if step == 9 else 1.0)

    task = make_task(tmp_path, stop={"metric_threshold": 0.5}, checkpoint_every=100)
    result = run_attempt(task, train)
    assert (result.state, result.reason, result.summary["last_step"]) == \
        ("STOPPED", "early-stop", 9)
    assert trained == list(range(10)) and result.checkpoint.path.endswith("ckpt-10")
    assert sorted(p.name for p in task.paths.checkpoints.glob("*.npz")) == ["ckpt-10.npz"]
    assert [e.step for e in load_run(task.paths.dir).Histograms("variables/out/kernel")] == [9]
