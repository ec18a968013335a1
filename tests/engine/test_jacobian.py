"""jacobian(): full Jacobians by reverse mode, against float64 central differences; the
chain rule as a product of Jacobians; a dense layer's Jacobian is its kernel transposed."""

import doctest
from pathlib import Path

import numpy as np
import pytest

import engine as en

RNG = np.random.default_rng(5)
RTOL, ATOL = 1e-7, 1e-9


def numeric_jacobian(sess, y, x, feed, eps=1e-6):
    """Central differences, float64: column ``j`` is ``(y(x + eps e_j) - y(x - eps e_j)) /
    2 eps``, perturbing the fed value of a placeholder or the session's value of a variable
    in place. Shape ``y.shape + x.shape``, as ``jacobian``."""
    feed = dict(feed)
    if isinstance(x, en.Placeholder):
        value = feed[x] = np.array(feed[x], dtype=np.float64)
    else:
        value = sess.variables(copy=False)[x.name]
    flat = value.reshape(-1)
    y0 = sess.run(y, feed)
    columns = np.empty((y0.size, flat.size))
    for j in range(flat.size):
        orig = flat[j]
        flat[j] = orig + eps
        up = sess.run(y, feed)
        flat[j] = orig - eps
        down = sess.run(y, feed)
        flat[j] = orig
        columns[:, j] = ((up - down) / (2 * eps)).reshape(-1)
    return columns.reshape(np.shape(y0) + value.shape)


def matrix(J, y_value, x_value):
    """The lectures' matrix: a row per output, a column per input."""
    return J.reshape(np.size(y_value), np.size(x_value))


@pytest.mark.parametrize("build", [
    lambda x, w: en.tanh(en.matmul(x, w)),
    lambda x, w: en.softmax(en.matmul(x, w) * en.matmul(x, w)),
    lambda x, w: en.reduce_sum(en.sigmoid(en.matmul(x, w)), axis=1),
    lambda x, w: en.reduce_mean(en.exp(en.matmul(x, w)) / 3.0),     # a scalar
], ids=["tanh", "softmax-of-square", "row-sums", "scalar"])
def test_jacobians_match_central_differences_for_inputs_and_variables(build):
    x = en.placeholder((None, 3), name="x")
    w = en.Variable(RNG.standard_normal((3, 4)) * 0.5, name="w")
    y = build(x, w)
    feed = {x: RNG.standard_normal((2, 3))}
    sess = en.Session(dtype=np.float64)
    y_value = sess.run(y, feed)
    for wrt, shape in ((x, (2, 3)), (w, (3, 4))):
        J = en.jacobian(y, wrt, feed, session=sess)
        assert J.shape == np.shape(y_value) + shape and J.dtype == np.float64
        np.testing.assert_allclose(J, numeric_jacobian(sess, y, wrt, feed), rtol=RTOL,
                                   atol=ATOL)


def test_the_jacobian_of_a_scalar_is_its_gradient():
    x = en.placeholder((2, 3), name="x")
    loss = en.reduce_sum(en.tanh(x) * en.tanh(x))
    feed = {x: RNG.standard_normal((2, 3))}
    sess = en.Session(dtype=np.float64)
    np.testing.assert_allclose(en.jacobian(loss, x, feed, session=sess),
                               sess.run(en.gradients(loss, x), feed), rtol=1e-14)


def test_chain_rule_the_jacobian_of_a_composition_is_the_product_of_jacobians():
    """h = f(g(x)) with g: R^3 -> R^4 and f: R^4 -> R^2 (row vectors (1, n)):
    J^h = J^f(g(x)) · J^g(x), each checked against central differences too."""
    A, a = RNG.standard_normal((3, 4)), RNG.standard_normal((4,))
    B = RNG.standard_normal((4, 2))

    def g(x):
        return en.tanh(en.matmul(x, en.constant(A)) + en.constant(a))

    def f(u):
        return en.softmax(en.matmul(u * u, en.constant(B)))

    x = en.placeholder((1, 3), name="x")
    u = g(x)
    h = f(u)
    sess = en.Session(dtype=np.float64)
    feed = {x: RNG.standard_normal((1, 3))}
    x_value, u_value, h_value = sess.run([x, u, h], feed)

    J_h = matrix(en.jacobian(h, x, feed, session=sess), h_value, x_value)    # (2, 3)
    J_g = matrix(en.jacobian(u, x, feed, session=sess), u_value, x_value)    # (4, 3)
    # f alone, on a placeholder fed g(x): the lectures' J^f evaluated at g(x)
    u_in = en.placeholder((1, 4), name="u")
    f_alone = f(u_in)
    J_f = matrix(en.jacobian(f_alone, u_in, {u_in: u_value}, session=sess), h_value,
                 u_value)                                                     # (2, 4)
    np.testing.assert_allclose(J_h, J_f @ J_g, rtol=1e-12, atol=1e-15)

    # with respect to the intermediate node itself: the same J^f
    J_f_inside = matrix(en.jacobian(h, u, feed, session=sess), h_value, u_value)
    np.testing.assert_allclose(J_f_inside, J_f, rtol=1e-12, atol=1e-15)

    for J, y, wrt, at in ((J_h, h, x, feed), (J_g, u, x, feed),
                          (J_f, f_alone, u_in, {u_in: u_value})):
        numeric = numeric_jacobian(sess, y, wrt, at)
        np.testing.assert_allclose(J, numeric.reshape(J.shape), rtol=RTOL, atol=ATOL)
    assert not np.allclose(J_h, 0) and J_h.shape == (2, 3)


def test_a_dense_layers_jacobian_is_its_kernel_transposed_per_example():
    """h = x @ kernel + bias, x (batch, in), kernel (in, units): J has shape
    (batch, units, batch, in); the block of example i with itself is kernelᵀ (units, in), the
    blocks between two examples are zero."""
    x = en.placeholder((None, 3), name="x")
    h = en.layers.dense(x, 4, name="layer")
    sess = en.Session(seed=1, dtype=np.float64)
    X = RNG.standard_normal((5, 3))
    J = en.jacobian(h, x, {x: X}, session=sess)
    kernel = sess.variables()["layer/kernel"]
    assert J.shape == (5, 4, 5, 3)
    for i in range(5):
        for k in range(5):
            np.testing.assert_array_equal(J[i, :, k, :], kernel.T if i == k else 0)
    np.testing.assert_allclose(J, numeric_jacobian(sess, h, x, {x: X}), rtol=RTOL, atol=ATOL)


def test_a_tanh_dense_layers_jacobian_is_the_derivative_times_the_kernel_transposed():
    """The step of backprop for dense layers: J = diag(1 - h²) · kernelᵀ per example."""
    x = en.placeholder((None, 3), name="x")
    h = en.layers.dense(x, 4, activation="tanh", name="layer")
    sess = en.Session(seed=2, dtype=np.float64)
    X = RNG.standard_normal((2, 3))
    J = en.jacobian(h, x, {x: X}, session=sess)
    kernel, h_value = sess.variables()["layer/kernel"], sess.run(h, {x: X})
    for i in range(2):
        np.testing.assert_allclose(J[i, :, i, :], np.diag(1 - h_value[i] ** 2) @ kernel.T,
                                   rtol=1e-13)


def test_float32_sessions_give_float32_and_a_default_session_is_float64():
    x = en.placeholder((None, 2), name="x")
    h = en.layers.dense(x, 3, name="layer")
    X = np.ones((1, 2))
    sess = en.Session(seed=0)
    J32 = en.jacobian(h, x, {x: X}, session=sess)
    assert J32.dtype == np.float32
    np.testing.assert_array_equal(J32[0, :, 0, :], sess.variables()["layer/kernel"].T)
    J64 = en.jacobian(h, x, {x: X}, seed=0)
    assert J64.dtype == np.float64
    np.testing.assert_allclose(J64, J32, rtol=1e-6)


def test_a_node_that_does_not_depend_on_x_has_a_zero_jacobian():
    x = en.placeholder((None, 2), name="x")
    other = en.placeholder((None, 2), name="other")
    J = en.jacobian(en.tanh(other), x, {x: np.ones((3, 2)), other: np.ones((1, 2))})
    assert J.shape == (1, 2, 3, 2) and not J.any()


def test_feeds_work_as_in_session_run():
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 2), name="y")
    z = x * y
    with pytest.raises(en.GraphError, match="must feed a value for placeholder 'y'"):
        en.jacobian(z, x, {x: np.ones((1, 2))})
    labels = en.placeholder((None,), dtype=np.int64, name="labels")
    with pytest.raises(en.GraphError, match="not floating point"):
        en.jacobian(z, labels, {x: np.ones((1, 2)), y: np.ones((1, 2)),
                                labels: np.zeros(1, np.int64)})
    with pytest.raises(en.GraphError, match="not floating point"):
        en.jacobian(labels, x, {labels: np.zeros(1, np.int64), x: np.ones((1, 2))})


def test_dropout_is_off_and_the_session_state_unchanged():
    x = en.placeholder((None, 3), name="x")
    h = en.dropout(en.layers.dense(x, 3, name="layer"), 0.5)
    sess = en.Session(seed=0, dtype=np.float64)
    sess.run(h, {x: np.ones((1, 3))})
    state = sess.rng.bit_generator.state
    J = en.jacobian(h, x, {x: np.ones((1, 3))}, session=sess)
    np.testing.assert_array_equal(J[0, :, 0, :], sess.variables()["layer/kernel"].T)
    assert sess.rng.bit_generator.state == state


def test_the_readme_jacobian_example_shows_what_it_prints():
    readme = Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text(encoding="utf-8").split("\n## Jacobians\n", 1)[1]
    example = section.split("```pycon\n", 1)[1].split("```", 1)[0]
    test = doctest.DocTestParser().get_doctest(example, {}, "README Jacobians", str(readme), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False) == (0, 14)
