"""Minibatches: order a pure function of (seed, epoch), addressable by step."""

import numpy as np
import pytest

import engine as en
from engine.data import Batcher


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    a, b = Batcher(100, 10, seed=3), Batcher(100, 10, seed=3)
    orders = [a.epoch_order(e).copy() for e in range(4)]
    for e in reversed(range(4)):  # another instance, visited in another order
        np.testing.assert_array_equal(b.epoch_order(e), orders[e])
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(100))
    assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch
    assert not np.array_equal(orders[0], Batcher(100, 10, seed=4).epoch_order(0))


def test_batch_for_a_step_is_the_same_directly_or_after_iterating():
    iterated = Batcher(50, 8, seed=1)  # 6 batches per epoch, 2 examples dropped
    seen = [iterated.indices(step).copy() for step in range(20)]
    for step in [17, 3, 12, 0, 19, 6, 5]:  # resumed anywhere, in any order
        np.testing.assert_array_equal(Batcher(50, 8, seed=1).indices(step), seen[step])
    # Within an epoch, batches are disjoint and of full size; epochs differ.
    epoch0 = np.concatenate(seen[:6])
    assert len(epoch0) == 48 and len(set(epoch0.tolist())) == 48
    assert not np.array_equal(seen[0], seen[6])


def test_batch_indexes_every_array_alike():
    X = np.arange(20).reshape(10, 2)
    Y = np.arange(10) * 10
    b = Batcher(10, 4, seed=0)
    xb, yb = b.batch(5, X, Y)
    idx = b.indices(5)
    np.testing.assert_array_equal(xb, X[idx])
    np.testing.assert_array_equal(yb, Y[idx])
    np.testing.assert_array_equal(xb[:, 0] * 5, yb)
    np.testing.assert_array_equal(b.batch(5, X), X[idx])  # one array: no tuple


def test_keeping_the_last_partial_batch():
    b = Batcher(10, 4, seed=0, drop_last=False)
    assert b.batches_per_epoch == 3
    sizes = [len(b.indices(s)) for s in range(6)]
    assert sizes == [4, 4, 2, 4, 4, 2]
    np.testing.assert_array_equal(np.sort(np.concatenate([b.indices(s) for s in range(3)])),
                                  np.arange(10))


def test_without_shuffling_batches_are_in_order():
    b = Batcher(6, 2, shuffle=False)
    assert [b.indices(s).tolist() for s in range(4)] == [[0, 1], [2, 3], [4, 5], [0, 1]]


def test_training_resumed_mid_epoch_sees_the_same_batches():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((40, 2)), rng.standard_normal((40, 1))

    def train(steps, start=0, values=None):
        x = en.placeholder((None, 2), name="x")
        y = en.placeholder((None, 1), name="y")
        loss = en.losses.mse(en.layers.dense(x, 1, name="lin"), y)
        step_op = en.optim.SGD(lr=0.1, momentum=0.9).minimize(loss)
        sess = en.Session(seed=0, dtype=np.float64)
        sess.attach(step_op)
        for name, value in (values or {}).items():
            sess.assign(name, value)
        batcher = Batcher(40, 6, seed=9)
        for step in range(start, steps):
            xb, yb = batcher.batch(step, X, Y)
            sess.run(step_op, {x: xb, y: yb})
        return sess.variables()

    straight = train(15)
    resumed = train(15, start=9, values=train(9))  # 6 batches per epoch: resume mid-epoch
    for name in straight:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)


@pytest.mark.parametrize("make, message", [
    (lambda: Batcher(0, 1), "n >= 1"),
    (lambda: Batcher(5, 0), "batch_size >= 1"),
    (lambda: Batcher(5, 6), "larger than the 5 examples"),
    (lambda: Batcher(5, 2, seed=-1), "seed"),
    (lambda: Batcher(5, 2).indices(-1), "step"),
    (lambda: Batcher(5, 2).batch(0, np.ones(4)), "4 rows.*5 examples"),
])
def test_bad_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
