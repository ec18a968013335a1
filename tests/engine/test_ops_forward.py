"""Every op's forward value against its numpy reference, in float64 and in float32."""

import numpy as np
import pytest

import engine as en
from tests.engine.helpers import as_variables
from tests.engine.op_cases import CASES


def run_case(case, dtype):
    variables = as_variables(case.inputs)
    node = case.build(*variables)
    return en.Session(seed=0, dtype=dtype).run(node)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_matches_numpy_float64(case):
    value = run_case(case, np.float64)
    expected = case.ref(*case.inputs)
    assert np.shape(value) == np.shape(expected)
    assert np.asarray(value).dtype == np.float64
    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_matches_numpy_float32(case):
    value = run_case(case, np.float32)
    expected = case.ref(*[np.asarray(a, np.float32).astype(np.float64) for a in case.inputs])
    assert np.shape(value) == np.shape(expected)
    assert np.asarray(value).dtype == np.float32
    np.testing.assert_allclose(value, expected, rtol=2e-6, atol=1e-6)


def test_static_shapes_match_run_time_shapes():
    for case in CASES:
        node = case.build(*as_variables(case.inputs))
        assert node.shape == np.shape(case.ref(*case.inputs)), case.id


def test_sigmoid_and_cross_entropy_are_stable_for_huge_logits():
    z = en.Variable(np.array([[-1000.0], [1000.0]]), name="z")
    labels = en.constant(np.array([[1.0], [0.0]]))
    sess = en.Session(dtype=np.float32)
    s, loss = sess.run([en.sigmoid(z), en.losses.sigmoid_cross_entropy(z, labels)])
    np.testing.assert_array_equal(s, [[0.0], [1.0]])
    assert loss == pytest.approx(1000.0)  # each example costs |z| = 1000, no inf or nan

    logits = en.Variable(np.array([[1000.0, 0.0, -1000.0]]), name="logits")
    ce = en.losses.softmax_cross_entropy(logits, en.constant(np.array([1])))
    p, loss = sess.run([en.softmax(logits), ce])
    np.testing.assert_array_equal(p, [[1.0, 0.0, 0.0]])
    assert loss == pytest.approx(1000.0)
