"""A first end-to-end check of the engine's public API (the detailed tests live beside it)."""

import numpy as np
import pytest

import engine as en


def test_xor_like_problem_trains_and_unfed_placeholder_is_named():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (256, 2)).astype(np.float32)
    Y = (X[:, :1] * X[:, 1:] > 0).astype(np.float32)
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    h = en.layers.dense(x, 16, activation="relu", name="hidden")
    logits = en.layers.dense(h, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    acc = en.metrics.accuracy(logits, y)
    train = en.optim.SGD(lr=0.5, momentum=0.9).minimize(loss)
    sess = en.Session(seed=0)
    first = None
    for _ in range(300):
        _, value, a = sess.run([train, loss, acc], feed={x: X, y: Y})
        first = value if first is None else first
    assert value < 0.2 * first and a > 0.95
    assert value.dtype == np.float32
    with pytest.raises(en.GraphError, match=r"placeholder 'y' \(shape \(None, 1\), float32\)"):
        sess.run(loss, feed={x: X})
