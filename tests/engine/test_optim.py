"""Optimizers against hand-written numpy versions of PyTorch's update rules."""

import numpy as np
import pytest

import engine as en

RNG = np.random.default_rng(7)
X, Y = RNG.standard_normal((10, 3)), RNG.standard_normal((10, 2))
W0, B0 = RNG.standard_normal((3, 2)), RNG.standard_normal(2)


def numpy_gradients(w, b):
    """Of ``mse(X w + b, Y)``."""
    d = 2 * (X @ w + b - Y) / Y.size
    return [X.T @ d, d.sum(axis=0)]


def sgd(lr, momentum=0.0, nesterov=False):
    def step(p, g, state, t):
        if momentum:
            state["momentum"] = momentum * state.get("momentum", 0) + g
            g = g + momentum * state["momentum"] if nesterov else state["momentum"]
        return p - lr * g
    return step


def adam(lr, beta1=0.9, beta2=0.999, eps=1e-8):
    def step(p, g, state, t):
        state["m"] = beta1 * state.get("m", 0) + (1 - beta1) * g
        state["v"] = beta2 * state.get("v", 0) + (1 - beta2) * g * g
        m_hat = state["m"] / (1 - beta1 ** t)
        v_hat = state["v"] / (1 - beta2 ** t)
        return p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return step


def rmsprop(lr, rho=0.99, eps=1e-8, momentum=0.0):
    def step(p, g, state, t):
        state["ms"] = rho * state.get("ms", 0) + (1 - rho) * g * g
        update = g / (np.sqrt(state["ms"]) + eps)
        if momentum:
            state["momentum"] = momentum * state.get("momentum", 0) + update
            update = state["momentum"]
        return p - lr * update
    return step


CASES = [
    ("sgd", lambda: en.optim.SGD(lr=0.1), sgd(0.1)),
    ("momentum", lambda: en.optim.SGD(lr=0.1, momentum=0.9), sgd(0.1, 0.9)),
    ("nesterov", lambda: en.optim.SGD(lr=0.05, momentum=0.8, nesterov=True),
     sgd(0.05, 0.8, True)),
    ("adam", lambda: en.optim.Adam(lr=0.01), adam(0.01)),
    ("adam_betas", lambda: en.optim.Adam(lr=0.05, beta1=0.5, beta2=0.9, eps=1e-6),
     adam(0.05, 0.5, 0.9, 1e-6)),
    ("rmsprop", lambda: en.optim.RMSProp(lr=0.01), rmsprop(0.01)),
    ("rmsprop_momentum", lambda: en.optim.RMSProp(lr=0.01, rho=0.9, momentum=0.5),
     rmsprop(0.01, 0.9, momentum=0.5)),
]


@pytest.mark.parametrize("make, reference", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_optimizer_matches_numpy_reference(make, reference):
    w = en.Variable(W0, name="w")
    b = en.Variable(B0, name="b")
    loss = en.losses.mse(en.constant(X) @ w + b, en.constant(Y))
    optimizer = make()
    train = optimizer.minimize(loss)
    sess = en.Session(dtype=np.float64)

    params, states = [W0.copy(), B0.copy()], [{}, {}]
    for t in range(1, 6):
        grads = numpy_gradients(*params)
        params = [reference(p, g, s, t) for p, g, s in zip(params, grads, states)]
        sess.run(train)
        values = sess.variables()
        np.testing.assert_allclose(values["w"], params[0], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(values["b"], params[1], rtol=1e-12, atol=1e-15)
        assert values[f"{optimizer.name}/step"] == t
        assert values[f"{optimizer.name}/step"].dtype == np.int64
        for name, state in zip(["w", "b"], states):
            for slot, expected in state.items():
                np.testing.assert_allclose(values[f"{optimizer.name}/{name}/{slot}"], expected,
                                           rtol=1e-12, atol=1e-15)
    # Every slot is reachable by name and none is left unchecked.
    slots = {k for k in values if k.startswith(optimizer.name + "/") and k.count("/") == 2}
    assert slots == {f"{optimizer.name}/{n}/{s}" for n, st in zip("wb", states) for s in st}


def test_update_is_in_place_and_fetches_show_the_values_used():
    w = en.Variable(np.array([1.0, 2.0]), name="w")
    loss = en.reduce_sum(w * w)
    train = en.optim.SGD(lr=0.25).minimize(loss)
    sess = en.Session(dtype=np.float64)
    before = sess.run(w)
    storage = sess.variables(copy=False)["w"]
    out, value, fetched_w = sess.run([train, loss, w])
    assert out is None
    assert value == 5.0 and np.array_equal(fetched_w, before)  # before the update
    np.testing.assert_array_equal(sess.run(w), [0.5, 1.0])
    assert sess.variables(copy=False)["w"] is storage  # updated in place, never replaced


def test_minimize_updates_only_var_list():
    a = en.Variable(np.array(1.0), name="a")
    b = en.Variable(np.array(1.0), name="b")
    train = en.optim.SGD(lr=0.5).minimize(a * b, var_list=[a])
    sess = en.Session(dtype=np.float64)
    sess.run(train)
    assert sess.variables()["a"] == 0.5 and sess.variables()["b"] == 1.0


def test_non_trainable_variables_are_not_updated():
    a = en.Variable(np.array(1.0), name="a")
    frozen = en.Variable(np.array(2.0), name="frozen", trainable=False)
    train = en.optim.SGD(lr=0.5).minimize(a * frozen)
    sess = en.Session(dtype=np.float64)
    sess.run(train)
    assert sess.variables()["a"] == 0.0 and sess.variables()["frozen"] == 2.0


@pytest.mark.parametrize("make, message", [
    (lambda: en.optim.SGD(lr=0), "lr"),
    (lambda: en.optim.SGD(lr=0.1, momentum=1.5), "momentum"),
    (lambda: en.optim.SGD(lr=0.1, nesterov=True), "nesterov"),
    (lambda: en.optim.Adam(beta1=1.0), "beta1"),
    (lambda: en.optim.RMSProp(rho=-0.1), "rho"),
])
def test_bad_hyperparameters_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_minimize_refuses_a_loss_without_variables():
    x = en.placeholder((None, 1), name="x")
    with pytest.raises(en.GraphError, match="depends on no trainable variable"):
        en.optim.SGD(lr=0.1).minimize(en.reduce_sum(x))
