"""float32 and float64 paths: a session's float dtype holds through a whole training step."""

import numpy as np
import pytest

import engine as en

OPTIMIZERS = [
    lambda: en.optim.SGD(lr=0.1, momentum=0.9, nesterov=True),
    lambda: en.optim.Adam(lr=0.01),
    lambda: en.optim.RMSProp(lr=0.01, momentum=0.5),
]


def classifier(optimizer):
    x = en.placeholder((None, 4), name="x")
    labels = en.placeholder((None,), dtype=np.int64, name="labels")
    h = en.layers.dense(x, 8, activation="relu", name="hidden")
    h = en.dropout(h, 0.2)
    h = en.concat([en.tanh(h), en.sigmoid(h) * 0.5], axis=1)
    logits = en.layers.dense(h, 3, name="out")
    kernels = [v for v in en.trainable_variables(logits) if v.name.endswith("/kernel")]
    loss = (en.losses.softmax_cross_entropy(logits, labels)
            + en.losses.l2_penalty(kernels, 1e-3)
            + 0.1 * en.reduce_mean(en.log_softmax(logits) ** 2))
    accuracy = en.metrics.accuracy(logits, labels)
    train = optimizer.minimize(loss)
    rng = np.random.default_rng(0)
    feed = {x: rng.standard_normal((16, 4)), labels: rng.integers(0, 3, 16)}
    return train, loss, accuracy, feed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make_optimizer", OPTIMIZERS, ids=["sgd", "adam", "rmsprop"])
def test_training_step_keeps_the_session_dtype(dtype, make_optimizer):
    train, loss, accuracy, feed = classifier(make_optimizer())
    nodes = [n for n in en.topological_order([train])
             if n is not train and not isinstance(n, en.Placeholder)]
    grads = en.gradients(loss, en.trainable_variables(loss))
    sess = en.Session(seed=0, dtype=dtype)
    for _ in range(2):  # the second step runs the compiled plan again
        values = sess.run([train, accuracy, *grads, *nodes], feed)
    for node, value in zip([accuracy, *grads, *nodes], values[1:]):
        expected = np.int64 if node.dtype.kind == "i" else dtype
        assert np.asarray(value).dtype == expected, node
    for name, value in sess.variables().items():
        assert value.dtype == (np.int64 if name.endswith("/step") else dtype), name
    assert sess.variables()[f"{train.optimizer.name}/step"] == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mixed_inputs_follow_the_session_dtype(dtype):
    x = en.placeholder((2,), name="x")
    count = en.constant(np.array([1, 2]))  # integers mixed into float math become floats
    out = (x * count + 0.5) / 3 + en.constant(np.float64(1.0))
    value = en.Session(dtype=dtype).run(out, {x: np.array([1.0, 2.0])})
    assert value.dtype == dtype
    np.testing.assert_allclose(value, (np.array([1.0, 4.0]) + 0.5) / 3 + 1)


def test_float64_is_more_precise_than_float32():
    x = en.Variable(np.array(1.0), name="x")
    tiny = x + 1e-12
    assert en.Session(dtype=np.float64).run(tiny) != 1.0
    assert en.Session(dtype=np.float32).run(tiny) == 1.0


def test_session_refuses_other_dtypes():
    with pytest.raises(ValueError, match="float16"):
        en.Session(dtype=np.float16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("build, reference", [
    (lambda y: (y + 1) / 2, lambda y: (y + 1) / 2),
    (en.reduce_mean, np.mean),
    (en.exp, np.exp),
    (en.sigmoid, lambda y: 1 / (1 + np.exp(-y))),
    (en.relu, lambda y: np.maximum(y, 0.0)),
    (en.leaky_relu, lambda y: np.where(y > 0, y, 0.01 * y)),
    (en.log_softmax, lambda y: y - np.log(np.sum(np.exp(y)))),
], ids=["div", "mean", "exp", "sigmoid", "relu", "leaky_relu", "log_softmax"])
def test_float_valued_ops_of_integers_give_the_session_float(dtype, build, reference):
    y = en.placeholder((None,), dtype=np.int64, name="y")
    values = np.array([1, -1, 2, 0])
    node = build(y)
    assert node.dtype.kind == "f"
    out = en.Session(dtype=dtype).run(node, {y: values})
    assert out.dtype == dtype
    np.testing.assert_allclose(out, reference(values.astype(np.float64)), rtol=1e-6)


def test_integer_sums_stay_integers():
    y = en.placeholder((None,), dtype=np.int64, name="y")
    out = en.Session().run(en.reduce_sum(y * 2), {y: np.array([1, 2, 3])})
    assert out == 12 and out.dtype == np.int64
