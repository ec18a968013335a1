"""Dense layers: variables, initialisers, and the lectures' backward formulas."""

import numpy as np
import pytest

import engine as en


@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_dense_backward_is_the_lecture_formula(activation):
    # Z = X W + b, A = f(Z), loss = sum(A * G): dZ = G f'(Z), dW = Xᵀ dZ, db = Σ dZ, dX = dZ Wᵀ.
    rng = np.random.default_rng(0)
    X, G = rng.standard_normal((8, 3)), rng.standard_normal((8, 4))
    x = en.placeholder((None, 3), name="x")
    out = en.layers.dense(x, 4, activation=activation, name="layer")
    kernel, bias = en.trainable_variables(out)
    assert (kernel.name, bias.name) == ("layer/kernel", "layer/bias")
    loss = en.reduce_sum(out * en.constant(G))
    sess = en.Session(seed=0, dtype=np.float64)
    dW, db, dX, A = sess.run(en.gradients(loss, [kernel, bias, x]) + [out], {x: X})

    W = sess.variables()["layer/kernel"]
    dZ = G if activation is None else G * A * (1 - A)
    np.testing.assert_allclose(dW, X.T @ dZ, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dZ.sum(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dX, dZ @ W.T, rtol=1e-12, atol=1e-12)


def test_dense_backward_of_a_minibatch_mse():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((16, 3)), rng.standard_normal((16, 2))
    x = en.placeholder((None, 3), name="x")
    y = en.placeholder((None, 2), name="y")
    Z = en.layers.dense(x, 2, name="layer", bias_initializer=en.initializers.normal(1.0))
    loss = en.losses.mse(Z, y)
    sess = en.Session(seed=0, dtype=np.float64)
    v = sess.attach(loss)
    dW, dX, z = sess.run(en.gradients(loss, [v["layer/kernel"], x]) + [Z], {x: X, y: Y})
    dZ = 2 * (z - Y) / Y.size
    np.testing.assert_allclose(dW, X.T @ dZ, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dX, dZ @ sess.variables()["layer/kernel"].T, rtol=1e-12,
                               atol=1e-12)


def test_mlp_names_its_layers_and_trains_all_of_them():
    x = en.placeholder((None, 4), name="x")
    logits = en.layers.mlp(x, [8, 8, 3], activation="tanh", name="net")
    names = [v.name for v in en.trainable_variables(logits)]
    assert names == [f"net/layer_{i}/{kind}" for i in range(3) for kind in ("kernel", "bias")]
    sess = en.Session(seed=0)
    assert sess.run(logits, {x: np.ones((2, 4))}).shape == (2, 3)
    assert sorted(sess.variables()) == sorted(names)


def test_initialisers_follow_the_activation_and_the_seed():
    x = en.placeholder((None, 400), name="x")
    relu = en.layers.dense(x, 300, activation="relu", name="relu")
    tanh = en.layers.dense(x, 300, activation="tanh", name="tanh")
    sess = en.Session(seed=3)
    found = sess.attach(relu, tanh)
    v = sess.variables()
    # He normal: std sqrt(2 / fan_in); Glorot uniform: bound sqrt(6 / (fan_in + fan_out)).
    assert np.std(v["relu/kernel"]) == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    bound = np.sqrt(6 / 700)
    assert np.abs(v["tanh/kernel"]).max() <= bound
    assert np.std(v["tanh/kernel"]) == pytest.approx(bound / np.sqrt(3), rel=0.02)
    assert not v["relu/bias"].any() and not v["tanh/bias"].any()
    assert set(found) == set(v) == {"relu/kernel", "relu/bias", "tanh/kernel", "tanh/bias"}
    again = en.Session(seed=3)
    again.attach(tanh)  # attached alone and in another order: same values by name
    np.testing.assert_array_equal(again.variables()["tanh/kernel"], v["tanh/kernel"])
    other = en.Session(seed=4)
    other.attach(tanh)
    assert not np.array_equal(other.variables()["tanh/kernel"], v["tanh/kernel"])


def test_dense_refuses_bad_arguments_naming_the_layer():
    x = en.placeholder((None, 3), name="x")
    with pytest.raises(en.GraphError, match="dense 'h'.*activation 'swish'"):
        en.layers.dense(x, 2, activation="swish", name="h")
    with pytest.raises(en.GraphError, match="dense 'h'.*units"):
        en.layers.dense(x, 0, name="h")
    with pytest.raises(en.GraphError, match="dense 'h'.*known features"):
        en.layers.dense(en.placeholder((None, None), name="y"), 2, name="h")
