"""Dropout (active only in training) and the Print op."""

import io

import numpy as np
import pytest

import engine as en

RATE = 0.25


def dropout_graph():
    x = en.placeholder((None, 50), name="x")
    w = en.Variable(np.ones((1, 50)), name="w")
    scaled = x * w
    dropped = en.dropout(scaled, RATE)
    loss = en.reduce_sum(dropped * dropped)
    return x, scaled, dropped, en.optim.SGD(lr=1e-3).minimize(loss)


X = np.random.default_rng(0).uniform(0.5, 1.5, (40, 50))


def is_dropout_of(value, x, rate=RATE):
    kept = value != 0
    np.testing.assert_allclose(value[kept], x[kept] / (1 - rate), rtol=1e-6)
    return 0.15 < 1 - kept.mean() < 0.35


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_is_the_identity_unless_training(dtype):
    x, _, dropped, _ = dropout_graph()
    sess = en.Session(seed=0, dtype=dtype)
    np.testing.assert_array_equal(sess.run(dropped, {x: X}), X.astype(dtype))
    np.testing.assert_array_equal(sess.run(dropped, {x: X}, training=False), X.astype(dtype))
    assert is_dropout_of(sess.run(dropped, {x: X}, training=True), X)


def test_dropout_is_active_when_a_train_op_is_fetched():
    x, scaled, dropped, train = dropout_graph()
    sess = en.Session(seed=0)
    _, value = sess.run([train, dropped], {x: X})
    assert is_dropout_of(value, X)
    # The train op's plan does not leave the session in training mode.
    value, before = sess.run([dropped, scaled], {x: X})
    np.testing.assert_array_equal(value, before)
    _, value, before = sess.run([train, dropped, scaled], {x: X}, training=False)
    np.testing.assert_array_equal(value, before)


def test_dropout_masks_are_deterministic_for_a_seed_and_change_between_steps():
    def masks(seed):
        x, _, dropped, train = dropout_graph()
        sess = en.Session(seed=seed)
        return [sess.run([train, dropped], {x: X})[1] != 0 for _ in range(3)]

    first, again, other = masks(5), masks(5), masks(6)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_gradient_is_the_scaled_mask(dtype):
    # check_gradients runs with training off, so compare backward with the mask drawn.
    x = en.Variable(X, name="x")
    g = np.random.default_rng(1).standard_normal(X.shape)
    dropped = en.dropout(x, RATE)
    loss = en.reduce_sum(dropped * en.constant(g))
    sess = en.Session(seed=0, dtype=dtype)
    value, grad = sess.run([dropped, en.gradients(loss, x)], training=True)
    assert is_dropout_of(value, X)
    np.testing.assert_allclose(grad, g * (value != 0) / (1 - RATE), rtol=1e-6)
    assert grad.dtype == dtype
    np.testing.assert_array_equal(sess.run(en.gradients(loss, x)), g.astype(dtype))


def test_dropout_refuses_a_bad_rate_or_integer_input():
    x = en.placeholder((None, 2), name="x")
    with pytest.raises(en.GraphError, match="rate"):
        en.dropout(x, 1.0)
    with pytest.raises(en.GraphError, match="'ids'.*floating"):
        en.dropout(en.placeholder((None,), dtype=np.int64, name="ids"), 0.5)


def test_print_writes_its_message_each_run_and_passes_values_through():
    stream = io.StringIO()
    x = en.placeholder((None, 2), name="x")
    w = en.Variable(np.array([[2.0, 3.0]]), name="w")
    scaled = x * w
    printed = en.Print(scaled, [w, en.reduce_sum(scaled)], message="w and sum: ", stream=stream)
    sess = en.Session(dtype=np.float64)
    value = sess.run(printed, {x: np.ones((1, 2))})
    np.testing.assert_array_equal(value, [[2.0, 3.0]])
    assert stream.getvalue() == "w and sum: [[2. 3.]] 5.\n"
    sess.run(printed, {x: np.ones((1, 2))})
    assert stream.getvalue().count("w and sum: ") == 2


def test_print_passes_gradients_through():
    stream = io.StringIO()
    w = en.Variable(np.array([1.0, -2.0]), name="w")
    loss = en.reduce_sum(en.print_(w * w, message="squares: ", stream=stream) * 3.0)
    sess = en.Session(dtype=np.float64)
    np.testing.assert_array_equal(sess.run(en.gradients(loss, w)), [6.0, -12.0])
    train = en.optim.SGD(lr=0.1).minimize(loss)
    sess.run(train)
    np.testing.assert_allclose(sess.run(w), [0.4, -0.8])
    assert "squares: [1. 4.]" in stream.getvalue()


def test_print_defaults_to_stderr(capsys):
    x = en.Variable(np.array([1.0]), name="x")
    en.Session().run(en.print_(x, message="x = "))
    assert capsys.readouterr().err == "x = [1.]\n"
