"""The lectures' worked examples, with their numbers."""

import numpy as np

import engine as en


def test_gradient_descent_on_x_squared_multiplies_x_by_0_8_each_step():
    # f = x², f' = 2x: one step with lr 0.1 is x - 0.2 x = 0.8 x.
    x = en.Variable(np.array(3.0), name="x")
    train = en.optim.SGD(lr=0.1).minimize(x ** 2)
    sess = en.Session(dtype=np.float64)
    for step in range(1, 51):
        sess.run(train)
        value = sess.run(x)
        expected = 3.0 * 0.8 ** step
        assert abs(value - expected) <= 1e-12 * abs(expected), step


def test_linear_regression_recovers_the_true_weights():
    rng = np.random.default_rng(0)
    n, d, noise = 1000, 3, 0.2
    true_w, true_b = np.array([[1.5], [-2.0], [0.5]]), 0.7
    X = rng.standard_normal((n, d))
    Y = X @ true_w + true_b + noise * rng.standard_normal((n, 1))

    x = en.placeholder((None, d), name="x")
    y = en.placeholder((None, 1), name="y")
    prediction = en.layers.dense(x, 1, name="linear")
    loss = en.losses.mse(prediction, y)
    train = en.optim.SGD(lr=0.1).minimize(loss)
    sess = en.Session(seed=0)
    feed = {x: X.astype(np.float32), y: Y.astype(np.float32)}
    for _ in range(300):
        sess.run(train, feed)

    values = sess.variables()
    np.testing.assert_allclose(values["linear/kernel"], true_w, atol=0.05)
    np.testing.assert_allclose(values["linear/bias"], [true_b], atol=0.05)
    assert sess.run(loss, feed) <= 0.046  # the noise variance is 0.04


TRIANGLE = np.array([[-0.8, -0.7], [0.8, -0.7], [0.0, 0.8]])


def triangle_labels(points: np.ndarray) -> np.ndarray:
    """+1 inside the triangle, -1 outside: ``(n, 2) -> (n, 1)``."""
    sides = []
    for i in range(3):
        a, b = TRIANGLE[i], TRIANGLE[(i + 1) % 3]
        sides.append((b[0] - a[0]) * (points[:, 1] - a[1])
                     - (b[1] - a[1]) * (points[:, 0] - a[0]))
    sides = np.stack(sides, axis=1)
    inside = (sides > 0).all(axis=1) | (sides < 0).all(axis=1)
    return np.where(inside, 1.0, -1.0)[:, None]


def triangle_test_accuracy(seed: int) -> float:
    rng = np.random.default_rng(100 + seed)
    X_train = rng.uniform(-1, 1, (1000, 2))
    X_test = rng.uniform(-1, 1, (1000, 2))
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")  # +1 / -1
    hidden = en.layers.dense(x, 3, activation="sigmoid", name="hidden")
    logits = en.layers.dense(hidden, 1, name="out")  # the sigmoid output is fused in the loss
    loss = en.losses.sigmoid_cross_entropy(logits, (y + 1) / 2)
    accuracy = en.metrics.accuracy(logits, y)
    train = en.optim.Adam(lr=0.1).minimize(loss)
    sess = en.Session(seed=seed)
    feed = {x: X_train, y: triangle_labels(X_train)}
    for _ in range(3000):
        sess.run(train, feed)
    return float(sess.run(accuracy, {x: X_test, y: triangle_labels(X_test)}))


def test_triangle_problem_with_three_sigmoid_hidden_units():
    labels = triangle_labels(np.random.default_rng(0).uniform(-1, 1, (1000, 2)))
    assert 0.2 < np.mean(labels > 0) < 0.6  # both classes well represented
    accuracies = [triangle_test_accuracy(seed) for seed in range(3)]
    assert sum(a >= 0.98 for a in accuracies) >= 2, accuracies


def test_two_linear_layers_equal_one_linear_map():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((5, 3))
    x = en.placeholder((None, 3), name="x")
    hidden = en.layers.dense(x, 4, name="first", bias_initializer=en.initializers.normal(1.0))
    out = en.layers.dense(hidden, 2, name="second", bias_initializer=en.initializers.normal(1.0))
    sess = en.Session(seed=1, dtype=np.float64)
    value = sess.run(out, {x: X})
    v = sess.variables()
    kernel = v["first/kernel"] @ v["second/kernel"]
    bias = v["first/bias"] @ v["second/kernel"] + v["second/bias"]
    assert np.all(v["first/bias"] != 0)
    np.testing.assert_allclose(value, X @ kernel + bias, rtol=1e-10, atol=1e-10)
