"""gradients(): targets of every kind, several losses, and compiled plans run many times."""

import numpy as np
import pytest

import engine as en

RNG = np.random.default_rng(11)
X = RNG.standard_normal((6, 3))


def small_net():
    x = en.placeholder((None, 3), name="x")
    w = en.Variable(RNG.standard_normal((3, 2)), name="w")
    h = en.matmul(x, w, name="h")
    out = en.tanh(h, name="out")
    return x, w, h, out


def test_gradient_with_respect_to_an_intermediate_node_and_the_loss_itself():
    x, _, h, out = small_net()
    loss = en.reduce_sum(out * out)
    sess = en.Session(dtype=np.float64)
    g_h, g_loss, g_out, value = sess.run([*en.gradients(loss, [h, loss, out]), out], {x: X})
    np.testing.assert_allclose(g_out, 2 * value, rtol=1e-12)
    np.testing.assert_allclose(g_h, 2 * value * (1 - value ** 2), rtol=1e-12)
    assert g_loss == 1.0


def test_non_scalar_loss_is_summed():
    x, w, _, out = small_net()
    sess = en.Session(dtype=np.float64)
    a, b = sess.run([en.gradients(out, w), en.gradients(en.reduce_sum(out), w)], {x: X})
    np.testing.assert_array_equal(a, b)


def test_two_losses_in_one_run_keep_their_own_gradients():
    x, w, _, out = small_net()
    loss1 = en.reduce_sum(out)
    loss2 = en.reduce_sum(out * out * out)
    sess = en.Session(dtype=np.float64)
    g1, g2 = sess.run([en.gradients(loss1, w), en.gradients(loss2, w)], {x: X})
    alone1 = en.Session(dtype=np.float64).run(en.gradients(loss1, w), {x: X})
    alone2 = en.Session(dtype=np.float64).run(en.gradients(loss2, w), {x: X})
    np.testing.assert_array_equal(g1, alone1)
    np.testing.assert_array_equal(g2, alone2)
    assert not np.allclose(g1, g2)


def test_fetching_a_gradient_with_the_train_op_shows_the_gradient_used():
    x, w, _, out = small_net()
    loss = en.reduce_sum(out * out)
    train = en.optim.SGD(lr=0.1).minimize(loss)
    sess = en.Session(dtype=np.float64)
    w0 = sess.run(w)
    _, grad = sess.run([train, en.gradients(loss, w)], {x: X})
    np.testing.assert_allclose(sess.run(w), w0 - 0.1 * grad, rtol=1e-12)


def test_a_plan_reused_with_other_batch_sizes_gives_fresh_results():
    x, w, _, out = small_net()
    loss = en.reduce_mean(out * out)
    fetches = [loss, out, *en.gradients(loss, [w, x])]
    sess = en.Session(dtype=np.float64)
    for n in [6, 2, 5, 6, 1]:  # buffers change shape, then come back
        got = sess.run(fetches, {x: X[:n]})
        expected = en.Session(dtype=np.float64).run(fetches, {x: X[:n]})
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
    assert len(sess._plans) == 1  # one compiled plan served every call


def test_fetched_values_are_copies_not_live_buffers():
    x, w, _, out = small_net()
    sess = en.Session(dtype=np.float64)
    first = sess.run(out, {x: X})
    kept = first.copy()
    sess.run(out, {x: -X})
    np.testing.assert_array_equal(first, kept)
    first[...] = 0  # writing into a result changes nothing in the session
    np.testing.assert_array_equal(sess.run(out, {x: X}), kept)
    sess.run(w)[...] = 0
    assert sess.run(w).any()


def test_fetches_keep_their_structure():
    x, _, h, out = small_net()
    sess = en.Session(dtype=np.float64)
    as_dict = sess.run({"h": h, "out": out}, {x: X})
    as_tuple = sess.run((h, out), {x: X})
    assert list(as_dict) == ["h", "out"] and isinstance(as_tuple, tuple)
    np.testing.assert_array_equal(as_dict["out"], np.tanh(as_dict["h"]))
    np.testing.assert_array_equal(as_tuple[0], as_dict["h"])


def test_trainable_variables_in_topological_order():
    x = en.placeholder((None, 2), name="x")
    out = en.layers.dense(en.layers.dense(x, 3, name="a"), 1, name="b")
    frozen = en.Variable(np.ones(1), name="frozen", trainable=False)
    names = [v.name for v in en.trainable_variables(out * frozen)]
    assert names == ["a/kernel", "a/bias", "b/kernel", "b/bias"]


def test_second_order_gradients_are_refused():
    w = en.Variable(np.ones(2), name="w")
    g = en.gradients(en.reduce_sum(w * w), w)
    with pytest.raises(en.GraphError, match="second-order"):
        en.Session().run(en.gradients(en.reduce_sum(g * g), w))


def test_differentiating_through_a_metric_is_refused_by_name():
    z = en.Variable(np.ones((2, 3)), name="z")
    acc = en.metrics.accuracy(z, en.constant(np.array([0, 1])), name="acc")
    with pytest.raises(en.GraphError, match="Accuracy 'acc'.*no gradient"):
        en.Session().run(en.gradients(acc * z, z))


def test_integer_targets_are_refused():
    ids = en.placeholder((None,), dtype=np.int64, name="ids")
    with pytest.raises(en.GraphError, match="'ids'.*not floating"):
        en.gradients(en.reduce_sum(ids * 1.0), ids)
