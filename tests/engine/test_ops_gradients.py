"""Analytic gradients of every op and loss against float64 central differences."""

import numpy as np
import pytest

import engine as en
from engine.ops.activations import Exp
from tests.engine.helpers import GRAD_TOL, assert_gradients, gradient_error
from tests.engine.op_cases import GRADIENT_CASES


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=lambda c: c.id)
def test_gradient_matches_central_differences(case):
    assert_gradients(case.build, case.inputs)


class WrongExp(Exp):
    """exp with a deliberately wrong backward (the derivative of x²/2)."""

    def backward(self, ctx, grad_output, x):
        return (grad_output * x,)


class SlightlyWrongExp(Exp):
    """exp whose gradient is 5% too large."""

    def backward(self, ctx, grad_output, x):
        return (1.05 * grad_output * ctx.output,)


@pytest.mark.parametrize("op", [WrongExp, SlightlyWrongExp])
def test_a_wrong_backward_is_caught(op):
    x = np.random.default_rng(0).uniform(0.5, 1.5, (3, 2))
    assert gradient_error(lambda a: op((a,)), [x]) > 1e-2
    assert gradient_error(lambda a: Exp((a,)), [x]) <= GRAD_TOL


def test_lecture_diamond_sums_gradients_along_all_paths():
    # x feeds z1 and z2; both feed h1 and h2; both feed p.
    def diamond(x):
        z1, z2 = en.exp(x), x * x
        h1, h2 = z1 + z2, z1 * z2
        return h1 * h2

    x0 = np.array([-0.7, 0.3, 1.2])
    assert_gradients(diamond, [x0])

    # And against the hand-derived chain rule, p = (e^x + x²)(e^x x²).
    x = en.Variable(x0, name="x")
    grad = en.Session(dtype=np.float64).run(en.gradients(en.reduce_sum(diamond(x)), x))
    e = np.exp(x0)
    expected = (e + 2 * x0) * e * x0 ** 2 + (e + x0 ** 2) * (e * x0 ** 2 + 2 * e * x0)
    np.testing.assert_allclose(grad, expected, rtol=1e-12)


def test_deeper_fan_out_through_several_ops():
    def net(x, w):
        h = en.tanh(x @ w)
        return en.concat([h, en.sigmoid(h) * h, en.softmax(h)], axis=1) / en.reduce_sum(h * h)

    rng = np.random.default_rng(3)
    assert_gradients(net, [rng.standard_normal((4, 3)), rng.standard_normal((3, 2))])


def test_gradients_with_respect_to_placeholders():
    rng = np.random.default_rng(5)
    x = en.placeholder((None, 3), name="x")
    w = en.Variable(rng.standard_normal((3, 2)), name="w")
    loss = en.reduce_sum(en.sigmoid(x @ w) ** 2)
    feed = {x: rng.standard_normal((4, 3))}
    assert en.check_gradients(loss, feed, variables=[x, w]) <= GRAD_TOL


def test_unnamed_variables_are_checked_separately():
    rng = np.random.default_rng(6)
    a = en.Variable(rng.standard_normal(3))
    b = en.Variable(rng.standard_normal((2, 3)))
    assert en.check_gradients(en.reduce_sum(en.exp(a * b))) <= GRAD_TOL


def test_gradient_of_unused_input_is_zero():
    a = en.Variable(np.ones(3), name="a")
    b = en.Variable(np.full((2, 2), 3.0), name="b")
    ga, gb = en.Session(dtype=np.float64).run(en.gradients(en.reduce_sum(a * a), [a, b]))
    np.testing.assert_array_equal(ga, 2 * np.ones(3))
    np.testing.assert_array_equal(gb, np.zeros((2, 2)))
