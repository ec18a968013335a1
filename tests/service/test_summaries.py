"""Engine summaries written to TensorBoard: with SummaryWriter outside a sweep, and with
trial.report(step, summaries) inside one (in-process attempts, as test_trial). Runs are read
back with TensorBoard's own readers."""

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

import engine as en
from service.summary_writer import SummaryWriter
from service.trial import Trial, run_attempt
from tests.service.tb_helpers import load_run, raw_events, written_points
from tests.service.test_trial import make_task, results_steps

STEPS = 12


def summarized_model(lr=0.5):
    """A small classifier with scalar and histogram summaries, merged from its loss."""
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    h = en.layers.dense(x, 4, activation="tanh", name="hidden")
    logits = en.layers.dense(h, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    accuracy = en.metrics.accuracy(logits, y)
    en.summary.scalar("loss", loss)
    en.summary.scalar("accuracy/train", accuracy)
    en.summary.histogram("weights/hidden", en.trainable_variables(loss)[0])
    en.summary.histogram("activations/hidden", h)
    train_op = en.optim.SGD(lr=lr, momentum=0.9).minimize(loss)
    merged = en.summary.merge_all([loss, accuracy])
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-1, 1, (32, 2)).astype(np.float32)
    feed = {x: inputs, y: (inputs[:, :1] > 0).astype(np.float32)}
    return loss, train_op, merged, feed


def histogram_stats(values):
    flat = np.asarray(values, dtype=np.float64).ravel()
    return flat.size, flat.min(), flat.max(), flat.sum()


def assert_histogram_is(event, values):
    h = event.histogram_value
    num, low, high, total = histogram_stats(values)
    assert (h.num, h.min, h.max) == (num, pytest.approx(low), pytest.approx(high))
    assert h.sum == pytest.approx(total, rel=1e-6, abs=1e-6)


def test_a_notebook_writer_writes_scalars_histograms_and_the_graph(tmp_path):
    loss, train_op, merged, feed = summarized_model()
    sess = en.Session(seed=0)
    written = []
    with SummaryWriter(tmp_path / "run") as writer:
        writer.graph(loss)
        for step in range(5):
            _, summaries = sess.run([train_op, merged], feed)
            writer.add(step, summaries)
            written.append(summaries)
        writer.add(5, {"lr": 0.5})                       # plain scalars too
    run = load_run(tmp_path / "run")
    tags = run.Tags()
    assert sorted(tags[event_accumulator.SCALARS]) == ["accuracy/train", "loss", "lr"]
    assert sorted(tags[event_accumulator.HISTOGRAMS]) == ["activations/hidden",
                                                          "weights/hidden"]
    assert [(e.step, e.value) for e in run.Scalars("loss")] == [
        (step, pytest.approx(s.scalars["loss"])) for step, s in enumerate(written)]
    assert [(e.step, e.value) for e in run.Scalars("lr")] == [(5, 0.5)]
    assert written[0].scalars["loss"] > written[-1].scalars["loss"]         # it learns
    kernels = run.Histograms("weights/hidden")
    assert [e.step for e in kernels] == list(range(5))
    for event, summaries in zip(kernels, written):
        assert_histogram_is(event, summaries.histograms["weights/hidden"])
    assert {n.name for n in run.Graph().node} >= {"hidden/kernel", "out/bias", "x", "y"}
    with pytest.raises(TypeError, match="SummaryWriter.add"):
        SummaryWriter(tmp_path / "other").add(0, [1.0])
    with SummaryWriter(tmp_path / "with-summaries") as writer:    # summary nodes in the graph
        writer.graph([train_op, merged])
    names = {n.name for n in load_run(tmp_path / "with-summaries").Graph().node}
    assert {"hidden/kernel", "x"} <= names and len(names) > 6


def test_purge_step_lets_a_notebook_run_again_without_duplicate_steps(tmp_path):
    _, _, merged, feed = summarized_model()
    for purge_step, steps in ((None, range(6)), (3, range(3, 6)), (0, range(4))):
        sess = en.Session(seed=0)
        with SummaryWriter(tmp_path, purge_step=purge_step) as writer:
            for step in steps:
                writer.add(step, sess.run(merged, feed))
    assert [s for s, _ in written_points(tmp_path)["loss"]] == [0, 1, 2, 3]
    steps = [e.step for e in raw_events(tmp_path) for v in e.summary.value
             if v.tag == "weights/hidden"]
    assert steps == [0, 1, 2, 3]


def make_summary_train(fail_at=None, calls=None, histograms_only_at=None):
    """A train function reporting ``sess.run(merged)`` each step (plus a named metric)."""
    def train(config, trial):
        _, train_op, merged, feed = summarized_model(config["lr"])
        sess = en.Session(seed=0)
        only_weights = en.summary.merge([s for s in merged.inputs
                                         if s.tag == "weights/hidden"])
        start = trial.restore(sess)
        if calls is not None:
            calls.append(start)
        for step in range(start, STEPS):
            _, summaries = sess.run([train_op, merged], feed)
            if step == histograms_only_at:
                trial.report(step, sess.run(only_weights))
            else:
                trial.report(step, summaries, extra=float(step))
            if trial.should_checkpoint(step):
                trial.checkpoint(sess, step)
            if step == fail_at and len(calls) == 1:
                raise RuntimeError(f"boom at step {step}")
    return train


def test_a_trial_reports_summaries_as_metrics_and_histograms(tmp_path):
    task = make_task(tmp_path)
    result = run_attempt(task, make_summary_train())
    assert result.outcome == "finished" and result.summary["last_step"] == STEPS - 1
    rows = [json.loads(line) for line in task.paths.results_jsonl.read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(STEPS))
    assert set(rows[0]["metrics"]) == {"loss", "accuracy/train", "extra"}
    # the scalars are the sweep's metrics: "loss" is the task's metric
    losses = [row["metrics"]["loss"] for row in rows]
    best = int(np.argmin(losses))
    assert result.summary["best_metrics"]["step"] == best
    assert result.summary["best_metrics"]["loss"] == losses[best]
    run = load_run(task.paths.dir)
    tags = run.Tags()
    assert sorted(tags[event_accumulator.SCALARS]) == ["accuracy/train", "extra", "loss"]
    assert [(e.step, e.value) for e in run.Scalars("loss")] == [
        (step, pytest.approx(value)) for step, value in enumerate(losses)]
    # the reported histograms at every step, beside the variables' at checkpoints
    assert {"activations/hidden", "weights/hidden", "variables/hidden/kernel"} <= set(
        tags[event_accumulator.HISTOGRAMS])
    assert [e.step for e in run.Histograms("weights/hidden")] == list(range(STEPS))
    assert [e.step for e in run.Histograms("activations/hidden")] == list(range(STEPS))
    assert [e.step for e in run.Histograms("variables/hidden/kernel")] == [4, 9]


def test_histograms_reported_past_a_restored_checkpoint_show_each_step_once(tmp_path):
    task = make_task(tmp_path)
    calls = []
    first = run_attempt(task, make_summary_train(fail_at=7, calls=calls))
    assert first.outcome == "error"
    second = run_attempt(make_task(tmp_path, attempt="a2"), make_summary_train(calls=calls))
    assert second.outcome == "finished" and calls == [0, 5]
    steps = [e.step for e in raw_events(task.paths.dir) for v in e.summary.value
             if v.tag == "weights/hidden"]
    assert steps == list(range(STEPS))
    assert [s for s, _ in written_points(task.paths.dir)["loss"]] == list(range(STEPS))


def test_a_report_of_histograms_only_writes_them_and_no_metrics(tmp_path):
    task = make_task(tmp_path)
    result = run_attempt(task, make_summary_train(histograms_only_at=3))
    assert result.outcome == "finished"
    assert results_steps(task) == [s for s in range(STEPS) if s != 3]
    run = load_run(task.paths.dir)
    assert 3 not in [e.step for e in run.Scalars("loss")]
    assert [e.step for e in run.Histograms("weights/hidden")] == list(range(STEPS))
    assert 3 not in [e.step for e in run.Histograms("activations/hidden")]


def test_report_refuses_what_is_neither_metrics_nor_summaries(tmp_path):
    trial = Trial(make_task(tmp_path))
    with pytest.raises(TypeError, match="en.summary"):
        trial.report(0, [1.0])
    with pytest.raises(ValueError, match="no metrics given"):
        trial.report(0, en.summary.Summaries())
    trial.close()
