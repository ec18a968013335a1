"""en.summary: scalar and histogram nodes, merge, merge_all over the graph of given fetches,
and what running them gives."""

import numpy as np
import pytest

import engine as en
from engine.summary import Summaries

RNG = np.random.default_rng(3)
X = RNG.uniform(-1, 1, (8, 2))
Y = (X[:, :1] > 0).astype(np.float64)


def model():
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    h = en.layers.dense(x, 4, activation="tanh", name="hidden")
    logits = en.layers.dense(h, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    return x, y, h, logits, loss


def test_running_merged_summaries_gives_the_values_the_step_used():
    x, y, h, logits, loss = model()
    kernel = en.trainable_variables(loss)[0]
    accuracy = en.metrics.accuracy(logits, y)
    en.summary.scalar("loss", loss)
    en.summary.scalar("accuracy", accuracy)
    en.summary.histogram("hidden/kernel", kernel)
    en.summary.histogram("hidden/activations", h)
    train = en.optim.SGD(lr=0.5).minimize(loss)
    merged = en.summary.merge_all([loss, accuracy])
    assert merged.tags == ("accuracy", "hidden/activations", "hidden/kernel", "loss")

    sess = en.Session(seed=0, dtype=np.float64)
    feed = {x: X, y: Y}
    kernel_before, h_before = sess.run([kernel, h], feed)
    assert kernel.name == "hidden/kernel"
    _, loss_value, accuracy_value, s = sess.run([train, loss, accuracy, merged], feed)
    assert isinstance(s, Summaries)
    assert list(s.scalars) == ["accuracy", "loss"] and list(s.histograms) == [
        "hidden/activations", "hidden/kernel"]
    assert s.scalars == {"loss": float(loss_value), "accuracy": float(accuracy_value)}
    assert type(s.scalars["loss"]) is float
    np.testing.assert_array_equal(s.histograms["hidden/kernel"], kernel_before)  # pre-update
    assert not np.array_equal(sess.variables()["hidden/kernel"], kernel_before)
    np.testing.assert_array_equal(s.histograms["hidden/activations"], h_before)

    # each run gives a new object: an earlier result does not change
    again = sess.run(merged, feed)
    assert again is not s and again.scalars["loss"] < s.scalars["loss"]
    np.testing.assert_array_equal(s.histograms["hidden/kernel"], kernel_before)


def test_a_single_summary_and_an_explicit_merge_run_too():
    x, y, h, _, loss = model()
    loss_summary = en.summary.scalar("loss", loss)
    h_summary = en.summary.histogram("h", h)
    sess = en.Session(seed=0)
    feed = {x: X, y: Y}
    only = sess.run(loss_summary, feed)
    assert only.scalars == {"loss": float(sess.run(loss, feed))} and only.histograms == {}
    merged = en.summary.merge([h_summary, loss_summary])
    assert merged.tags == ("h", "loss")
    value = sess.run(merged, feed)
    assert list(value.scalars) == ["loss"] and value.histograms["h"].shape == (8, 4)
    assert value.histograms["h"].dtype == np.float32                 # the session's dtype
    # a forward-only plan hands buffers on to later ops: the histogram is a copy
    np.testing.assert_array_equal(value.histograms["h"], sess.run(h, feed))
    nested = sess.run(en.summary.merge([merged, en.summary.scalar("x/mean",
                                                                  en.reduce_mean(x))]), feed)
    assert set(nested.scalars) == {"loss", "x/mean"} and set(nested.histograms) == {"h"}


def test_merge_all_takes_the_summaries_computed_from_the_graph_of_its_fetches():
    x, y, h, _, loss = model()
    en.summary.scalar("loss", loss)
    en.summary.scalar("h/mean", en.reduce_mean(h))   # not upstream of loss, but computed from it
    # a validation graph through placeholders of its own, sharing the variables
    x_val = en.placeholder((None, 2), name="x_val")
    val_logits = en.layers.dense(x_val, 1, name="val_out")
    en.summary.scalar("val/logit_mean", en.reduce_mean(val_logits))
    # an unrelated graph
    other = en.placeholder((None, 3), name="other")
    en.summary.histogram("other", other)

    merged = en.summary.merge_all(loss)
    assert merged.tags == ("h/mean", "loss")
    value = en.Session(seed=0).run(merged, {x: X, y: Y})     # the loss's feed is enough
    assert set(value.scalars) == {"h/mean", "loss"}
    assert en.summary.merge_all(h).tags == ("h/mean",)
    assert en.summary.merge_all({"v": val_logits}).tags == ("val/logit_mean",)
    assert en.summary.merge_all([val_logits, loss]).tags == ("h/mean", "loss",
                                                             "val/logit_mean")
    # the same graph built twice gives the same merge: no state outside the graph
    assert en.summary.merge_all(loss).tags == merged.tags


def test_merge_all_without_summaries_and_duplicate_tags_are_errors():
    *_, h, _, loss = model()
    with pytest.raises(en.GraphError, match="no summary is computed from the graph"):
        en.summary.merge_all(loss)
    en.summary.scalar("loss", loss)
    en.summary.scalar("loss", en.reduce_mean(h))
    with pytest.raises(en.GraphError, match="two summaries are tagged 'loss'"):
        en.summary.merge_all(loss)
    with pytest.raises(en.GraphError, match="merge takes summary nodes"):
        en.summary.merge([loss])


def test_scalar_summaries_take_one_value():
    *_, h, _, loss = model()
    with pytest.raises(en.GraphError, match="more than one value"):
        en.summary.scalar("h", h)
    batch_logit = en.summary.scalar("first", en.placeholder((None, 1), name="p"))
    sess = en.Session()
    assert sess.run(batch_logit, {batch_logit.inputs[0]: [[2.0]]}).scalars == {"first": 2.0}
    with pytest.raises(en.GraphError, match="scalar summary 'first'.*not one value"):
        sess.run(batch_logit, {batch_logit.inputs[0]: [[1.0], [2.0]]})
    with pytest.raises(en.GraphError, match="bad node name"):
        en.summary.scalar("a//b", loss)


def test_summaries_are_not_differentiable_and_show_in_the_graph_description():
    x, _, h, _, loss = model()
    s = en.summary.histogram("h", h)
    with pytest.raises(en.GraphError, match="no gradient"):
        en.Session().run(en.gradients(s, x), {x: X})
    nodes = {n["name"]: n for n in en.graph_def(en.summary.merge_all(loss))["nodes"]}
    assert nodes["h"]["op"] == "HistogramSummary" and nodes["h"]["inputs"] == ["hidden/Tanh"]
    assert nodes["MergeSummary"]["inputs"] == ["h"]
