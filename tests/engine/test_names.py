"""Names: unique within a graph, deterministic, no process-wide counter."""

import numpy as np
import pytest

import engine as en
from engine.graph import ordered_names


def build_model():
    x = en.placeholder((None, 3), name="x")
    y = en.placeholder((None,), dtype=np.int64, name="y")
    h = en.layers.dense(x, 5, activation="tanh", name="hidden")
    h = en.dropout(h, 0.1) + en.sigmoid(h) * 0.5  # unnamed ops of several kinds, some repeated
    logits = en.layers.dense(h, 3, name="out")
    loss = en.losses.softmax_cross_entropy(logits, y) + 0.01 * en.reduce_sum(logits * logits)
    train = en.optim.Adam(lr=0.01).minimize(loss)
    return x, y, logits, loss, train


def graph_names(node):
    return [name for name in ordered_names([node])[1].values()]


FEED_X = np.random.default_rng(0).standard_normal((6, 3))
FEED_Y = np.array([0, 1, 2, 0, 1, 2])


def test_the_same_model_built_twice_has_identical_names():
    first, second = build_model(), build_model()
    names = graph_names(first[-1])
    assert names == graph_names(second[-1])
    assert len(set(names)) == len(names)  # unique within the graph
    assert {"hidden/kernel", "hidden/bias", "out/kernel", "out/bias", "Adam/step",
            "Adam/hidden/kernel/m", "Adam/out/bias/v", "Add", "Add_1", "Mul", "Mul_1"} <= set(names)
    # Building other graphs in between changes nothing: there is no process-wide counter.
    for _ in range(3):
        build_model()
    assert graph_names(build_model()[-1]) == names


def test_sessions_of_the_same_model_have_the_same_variable_names():
    (x1, y1, _, _, train1), (x2, y2, _, _, train2) = build_model(), build_model()
    sess1, sess2 = en.Session(seed=1), en.Session(seed=2)
    sess1.run(train1, {x1: FEED_X, y1: FEED_Y})
    sess2.run(train2, {x2: FEED_X, y2: FEED_Y})
    assert list(sess1.variables()) == list(sess2.variables())


def test_a_rebuilt_model_restores_the_first_ones_variables_by_name():
    x1, y1, logits1, _, train1 = build_model()
    sess1 = en.Session(seed=1)
    for _ in range(3):
        sess1.run(train1, {x1: FEED_X, y1: FEED_Y})

    x2, y2, logits2, _, train2 = build_model()
    sess2 = en.Session(seed=2)  # another seed: equal values can only come from the copy
    for name, value in sess1.variables().items():
        sess2.assign(name, value)
    feed1, feed2 = {x1: FEED_X, y1: FEED_Y}, {x2: FEED_X, y2: FEED_Y}
    np.testing.assert_array_equal(sess2.run(logits2, feed2), sess1.run(logits1, feed1))
    # Optimizer state came along too: training on continues identically (dropout aside,
    # whose generator is the session's, so compare without it).
    for _ in range(2):
        sess1.run(train1, feed1, training=False)
        sess2.run(train2, feed2, training=False)
    for (name, a), b in zip(sess1.variables().items(), sess2.variables().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_a_fresh_session_restores_by_variable_node_too():
    x1, _, logits1, _, _ = build_model()
    x2, _, logits2, _, _ = build_model()
    sess1, sess2 = en.Session(seed=1), en.Session(seed=2)
    found = sess1.attach(logits1)
    for name, node in sess2.attach(logits2).items():
        sess2.assign(node, sess1.variables()[name])
    assert found.keys() == sess2.variables().keys()
    np.testing.assert_array_equal(sess1.run(logits1, {x1: FEED_X}),
                                  sess2.run(logits2, {x2: FEED_X}))


def test_unnamed_ops_are_numbered_in_topological_order():
    a = en.placeholder((2,), name="a")
    out = en.exp(a + 1.0) + en.exp(a)
    _, names = ordered_names([out])
    assert names[out] == "Add_1" and names[out.inputs[0]] == "Exp"
    assert names[out.inputs[0].inputs[0]] == "Add" and names[out.inputs[1]] == "Exp_1"


def test_given_names_are_kept_and_ops_avoid_them():
    a = en.placeholder((2,), name="Add")
    out = en.add(a, a)
    assert ordered_names([out])[1][out] == "Add_1"


def test_unnamed_variables_get_distinct_names_and_train():
    a = en.Variable(np.array([1.0]))
    b = en.Variable(np.array([2.0]))
    train = en.optim.SGD(lr=0.1, momentum=0.9).minimize(en.reduce_sum(a * b))
    sess = en.Session(dtype=np.float64)
    sess.run(train)
    values = sess.variables()
    assert values["Variable"] == 0.8 and values["Variable_1"] == 1.9
    assert values["SGD/Variable/momentum"] == 2.0 and values["SGD/Variable_1/momentum"] == 1.0
    sess.assign(b, [5.0])  # by node: finds the name the session gave it
    assert sess.variables()["Variable_1"] == 5.0


def test_an_unnamed_variable_never_silently_takes_another_ones_value():
    a = en.Variable(np.array([1.0]))
    b = en.Variable(np.array([2.0]))
    sess = en.Session()
    assert sess.run(a + b) == 3.0
    # Alone, b would be called 'Variable' like a was: refused, not a's value.
    with pytest.raises(en.GraphError, match="variable 'Variable'.*give them names"):
        sess.run(b)
