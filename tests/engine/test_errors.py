"""Mistakes give clear errors that name the culprit, raised where the mistake was made."""

import numpy as np
import pytest

import engine as en


def regression():
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    prediction = en.layers.dense(x, 1, name="out")
    return x, y, en.losses.mse(prediction, y)


def test_unfed_placeholder_is_named_with_its_shape_and_dtype():
    x, _, loss = regression()
    with pytest.raises(en.GraphError) as err:
        en.Session().run(loss, feed={x: np.ones((3, 2))})
    assert "must feed a value for placeholder 'y' (shape (None, 1), float32)" in str(err.value)


def test_unfed_integer_placeholder_is_named_with_its_dtype():
    labels = en.placeholder((None,), dtype=np.int64, name="labels")
    with pytest.raises(en.GraphError, match=r"placeholder 'labels' \(shape \(None,\), int64\)"):
        en.Session().run(labels * 2)


@pytest.mark.parametrize("fed, given", [
    (np.ones((3, 3)), "(3, 3)"), (np.ones(3), "(3,)"), (np.ones((3, 2, 1)), "(3, 2, 1)")])
def test_wrong_fed_shape_names_the_placeholder_and_both_shapes(fed, given):
    x, y, loss = regression()
    with pytest.raises(en.GraphError) as err:
        en.Session().run(loss, feed={x: fed, y: np.ones((3, 1))})
    assert f"placeholder 'x' expects shape (None, 2), was fed shape {given}" in str(err.value)


@pytest.mark.parametrize("fed, given", [
    (np.array([0.5, 1.5]), "float64"),
    (np.array(["a", "b"]), "str"),
    (["cat", "dog"], "str"),
])
def test_unsafe_dtype_is_refused_naming_the_placeholder(fed, given):
    labels = en.placeholder((None,), dtype=np.int64, name="labels")
    with pytest.raises(en.GraphError) as err:
        en.Session().run(labels * 2, feed={labels: fed})
    message = str(err.value)
    assert message.startswith("placeholder 'labels' expects int64 of shape (None,), was fed ")
    assert given in message and message.endswith("of shape (2,)")


def test_strings_fed_to_a_float_placeholder_are_refused():
    x, y, loss = regression()
    with pytest.raises(en.GraphError, match="placeholder 'y'.*float32"):
        en.Session().run(loss, feed={x: np.ones((2, 2)), y: np.array([["1"], ["2"]])})


def test_a_ragged_feed_is_refused_naming_the_placeholder():
    x, y, loss = regression()
    with pytest.raises(en.GraphError, match="placeholder 'x'"):
        en.Session().run(loss, feed={x: [[1.0, 2.0], [3.0]], y: np.ones((2, 1))})


def test_safe_casts_are_accepted():
    x, y, loss = regression()
    labels = en.placeholder((None,), dtype=np.int64, name="labels")
    sess = en.Session()
    # Python lists, integers and float64 into float32; int32 into int64.
    value = sess.run([loss, labels], feed={x: [[1, 2], [3, 4]], y: np.ones((2, 1)),
                                           labels: np.array([1, 2], np.int32)})
    assert value[0].dtype == np.float32 and value[1].dtype == np.int64


@pytest.mark.parametrize("fetches, culprit", [
    ("loss", "str 'loss'"),
    ([None], "item 0: NoneType"),
    ({"loss": 3.0}, "key 'loss': float 3.0"),
    (np.ones(2), "ndarray"),
])
def test_fetching_a_non_node_is_refused(fetches, culprit):
    with pytest.raises(en.GraphError) as err:
        en.Session().run(fetches)
    assert culprit in str(err.value) and "fetch" in str(err.value)


def test_feeding_a_non_placeholder_is_refused():
    x, y, loss = regression()
    kernel = en.trainable_variables(loss)[0]
    with pytest.raises(en.GraphError,
                       match="can only feed placeholders, not Variable 'out/kernel'"):
        en.Session().run(loss, feed={x: np.ones((1, 2)), y: np.ones((1, 1)),
                                     kernel: np.ones((2, 1))})
    with pytest.raises(en.GraphError, match="can only feed placeholders, not str 'x'"):
        en.Session().run(loss, feed={"x": np.ones((1, 2))})
    with pytest.raises(en.GraphError, match="feed must be a dict"):
        en.Session().run(loss, feed=[(x, np.ones((1, 2)))])


def test_matmul_shape_mismatch_is_raised_at_the_matmul():
    x = en.placeholder((None, 3), name="x")
    w = en.Variable(np.ones((4, 2)), name="w")
    with pytest.raises(en.GraphError) as err:
        x @ w  # building the node is the mistake
    message = str(err.value)
    assert "(None, 3) @ (4, 2)" in message and "'x'" in message and "'w'" in message
    with pytest.raises(en.GraphError, match=r"matmul 'scores'.*\(None, 3\) @ \(4, 2\)"):
        en.matmul(x, w, name="scores")
    with pytest.raises(en.GraphError, match="'v'.*must be 2-D"):
        en.matmul(x, en.Variable(np.ones(3), name="v"))


def test_matmul_mismatch_known_only_when_fed_names_the_op():
    x = en.placeholder((None, None), name="x")
    w = en.Variable(np.ones((4, 2)), name="w")
    scores = en.matmul(x, w, name="scores")
    with pytest.raises(en.GraphError, match=r"matmul 'scores'.*\(5, 3\).*\(4, 2\)"):
        en.Session().run(scores, {x: np.ones((5, 3))})


def test_broadcast_mismatch_is_raised_at_the_op_naming_its_inputs():
    x = en.placeholder((None, 3), name="x")
    b = en.Variable(np.ones(4), name="b")
    with pytest.raises(en.GraphError, match=r"'x'.*'b'.*\(None, 3\) and \(4,\)"):
        x + b


def test_loss_shape_mismatches_name_the_inputs():
    logits = en.placeholder((None, 3), name="logits")
    with pytest.raises(en.GraphError, match="'logits'.*'y'"):
        en.losses.sigmoid_cross_entropy(logits, en.placeholder((None, 1), name="y"))
    with pytest.raises(en.GraphError, match="'classes'.*integer class ids"):
        en.losses.softmax_cross_entropy(logits, en.placeholder((None, 1), np.int64, "classes"))
    ids = en.placeholder((None,), dtype=np.int64, name="ids")
    with pytest.raises(en.GraphError, match=r"labels must be in \[0, 3\)"):
        en.Session().run(en.losses.softmax_cross_entropy(logits, ids),
                         {logits: np.zeros((2, 3)), ids: np.array([0, 3])})


def test_shape_ops_refuse_impossible_shapes_by_name():
    x = en.placeholder((2, 3), name="x")
    with pytest.raises(en.GraphError, match="'x'.*\\(2, 3\\)"):
        en.reshape(x, (4, 2))
    with pytest.raises(en.GraphError, match="'x'.*not a permutation"):
        en.transpose(x, (0, 0))
    with pytest.raises(en.GraphError, match="concat along axis 0"):
        en.concat([x, en.placeholder((2, 4), name="z")], axis=0)
    with pytest.raises(en.GraphError, match="axis 2 out of range"):
        en.reduce_sum(x, axis=2)
    with pytest.raises(en.GraphError, match="axis 5 out of range"):
        en.softmax(x, axis=5)


def test_two_different_variables_with_one_name_fail_when_run():
    a = en.Variable(np.ones(2), name="weights")
    b = en.Variable(np.zeros(2), name="weights")
    total = a + b  # building is fine: names are resolved per graph
    with pytest.raises(en.GraphError, match="two different variables are named 'weights'"):
        en.Session().run(total)


def test_bad_node_names_are_refused():
    for name in ["", "/x", "x/", "a//b"]:
        with pytest.raises(en.GraphError, match="name"):
            en.placeholder((None,), name=name)
