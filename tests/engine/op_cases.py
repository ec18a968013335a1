"""One table of op cases shared by the forward (numpy reference) and gradient tests.

Each case builds a node from float64 input variables and gives the numpy reference of its
value. Inputs are random, kept away from kinks (ReLU's 0) and from the edges of domains
(``log`` and the base of ``pow`` positive, divisors away from 0).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

import engine as en
from tests.engine.helpers import away_from_zero

# Inputs are described, not drawn, here: each case draws its own from a generator seeded by
# its id, so adding or reordering cases never changes another case's inputs.

def normal(*shape, scale: float = 1.0):
    return lambda rng: scale * rng.standard_normal(shape)


def signed(*shape):
    """At least 0.1 away from 0 (ReLU's kink, division)."""
    return lambda rng: away_from_zero(rng, shape, 0.1, 2.0)


def positive(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, size=shape)


def uniform(low: float, high: float, *shape):
    return lambda rng: rng.uniform(low, high, size=shape)


@dataclass
class Case:
    id: str
    build: Callable  # variables -> node
    ref: Callable  # float64 arrays -> array
    draws: list  # one (rng -> float64 array) per input
    differentiable: bool = True

    @property
    def inputs(self) -> list:
        rng = np.random.default_rng(zlib.crc32(self.id.encode()))
        return [draw(rng) for draw in self.draws]


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_log_softmax(z, axis=-1):
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def np_softmax(z, axis=-1):
    return np.exp(np_log_softmax(z, axis))


rng = np.random.default_rng(1234)  # the fixed labels
BIN_LABELS = (rng.random((6, 1)) < 0.5).astype(np.float64)
INT_LABELS = rng.integers(0, 4, size=7)
DIST_LABELS = rng.random((7, 4))
DIST_LABELS /= DIST_LABELS.sum(axis=1, keepdims=True)
ACC_LABELS = rng.integers(0, 3, size=9)

CASES = [
    # arithmetic, with numpy broadcasting
    Case("add", lambda a, b: a + b, np.add, [normal(3, 4), normal(3, 4)]),
    Case("add_bias", lambda a, b: a + b, np.add, [normal(4), normal(5, 4)]),
    Case("add_scalar", lambda a, b: a + b, np.add, [normal(), normal(3, 4)]),
    Case("add_outer", lambda a, b: a + b, np.add, [normal(5, 1), normal(1, 4)]),
    Case("add_python_number", lambda a: 2.5 + a, lambda a: 2.5 + a, [normal(3)]),
    Case("sub", lambda a, b: a - b, np.subtract, [normal(5, 4), normal(4)]),
    Case("sub_broadcast_left", lambda a, b: a - b, np.subtract, [normal(4), normal(5, 4)]),
    Case("rsub_number", lambda a: 1.0 - a, lambda a: 1.0 - a, [normal(2, 3)]),
    Case("mul", lambda a, b: a * b, np.multiply, [normal(3, 4), normal(3, 4)]),
    Case("mul_column", lambda a, b: a * b, np.multiply, [normal(6, 1), normal(6, 3)]),
    Case("mul_scalar", lambda a, b: a * b, np.multiply, [normal(), normal(3, 4)]),
    Case("mul_self", lambda a: a * a, lambda a: a * a, [normal(3, 2)]),
    Case("div", lambda a, b: a / b, np.divide, [normal(3, 4), signed(3, 4)]),
    Case("div_by_row", lambda a, b: a / b, np.divide, [normal(5, 4), signed(4)]),
    Case("div_column_by", lambda a, b: a / b, np.divide, [normal(5, 1), signed(5, 3)]),
    Case("div_scalar_numerator", lambda a, b: a / b, np.divide, [normal(), signed(2, 3)]),
    Case("rdiv_number", lambda a: 3.0 / a, lambda a: 3.0 / a, [signed(4)]),
    Case("pow", lambda a, b: a ** b, np.power, [positive(3, 4), uniform(-1.5, 2.5, 3, 4)]),
    Case("pow_broadcast", lambda a, b: en.pow(a, b), np.power,
         [positive(5, 3), uniform(-1.5, 2.5, 3)]),
    Case("pow_scalar_exponent", lambda a, b: a ** b, np.power, [positive(2, 3), normal()]),
    Case("square", lambda a: a ** 2, lambda a: a ** 2, [normal(3, 3)]),
    Case("rpow_number", lambda a: 2.0 ** a, lambda a: 2.0 ** a, [normal(4)]),
    Case("neg", lambda a: -a, np.negative, [normal(3, 2)]),
    Case("matmul", lambda a, b: a @ b, np.matmul, [normal(5, 3), normal(3, 4)]),
    Case("matmul_fn", lambda a, b: en.matmul(a, b), np.matmul, [normal(1, 6), normal(6, 2)]),
    # elementwise functions and activations
    Case("exp", en.exp, np.exp, [normal(3, 4)]),
    Case("log", en.log, np.log, [positive(3, 4)]),
    Case("sigmoid", en.sigmoid, np_sigmoid, [normal(4, 5, scale=2)]),
    Case("tanh", en.tanh, np.tanh, [normal(4, 5)]),
    Case("relu", en.relu, lambda a: np.maximum(a, 0), [signed(4, 5)]),
    Case("leaky_relu", en.leaky_relu, lambda a: np.where(a > 0, a, 0.01 * a), [signed(4, 5)]),
    Case("leaky_relu_alpha", lambda a: en.leaky_relu(a, alpha=0.3),
         lambda a: np.where(a > 0, a, 0.3 * a), [signed(4, 5)]),
    Case("softmax", en.softmax, np_softmax, [normal(4, 5)]),
    Case("softmax_axis0", lambda a: en.softmax(a, axis=0), lambda a: np_softmax(a, 0),
         [normal(4, 5)]),
    Case("log_softmax", en.log_softmax, np_log_softmax, [normal(4, 5)]),
    Case("log_softmax_axis0", lambda a: en.log_softmax(a, axis=0),
         lambda a: np_log_softmax(a, 0), [normal(4, 5)]),
    # reductions
    Case("sum_all", en.reduce_sum, np.sum, [normal(3, 4)]),
    Case("sum_axis0", lambda a: en.reduce_sum(a, axis=0), lambda a: a.sum(axis=0),
         [normal(3, 4)]),
    Case("sum_axes_0_2", lambda a: en.reduce_sum(a, axis=(0, 2)),
         lambda a: a.sum(axis=(0, 2)), [normal(2, 3, 4)]),
    Case("sum_negative_axis_keepdims", lambda a: en.reduce_sum(a, axis=-1, keepdims=True),
         lambda a: a.sum(axis=-1, keepdims=True), [normal(2, 3, 4)]),
    Case("mean_all", en.reduce_mean, np.mean, [normal(3, 4)]),
    Case("mean_axis1", lambda a: en.reduce_mean(a, axis=1), lambda a: a.mean(axis=1),
         [normal(3, 4)]),
    Case("mean_axes_keepdims", lambda a: en.reduce_mean(a, axis=(0, 1), keepdims=True),
         lambda a: a.mean(axis=(0, 1), keepdims=True), [normal(2, 3, 4)]),
    # shapes
    Case("reshape", lambda a: en.reshape(a, (2, 6)), lambda a: a.reshape(2, 6), [normal(3, 4)]),
    Case("reshape_infer", lambda a: en.reshape(a, (-1, 2)), lambda a: a.reshape(-1, 2),
         [normal(2, 3, 2)]),
    Case("transpose", en.transpose, np.transpose, [normal(3, 4)]),
    Case("transpose_axes", lambda a: en.transpose(a, (1, 2, 0)),
         lambda a: a.transpose(1, 2, 0), [normal(2, 3, 4)]),
    Case("transpose_negative_axes", lambda a: en.transpose(a, (0, -1, -2)),
         lambda a: a.transpose(0, -1, -2), [normal(2, 3, 4)]),
    Case("concat_last", lambda a, b, c: en.concat([a, b, c]),
         lambda a, b, c: np.concatenate([a, b, c], axis=-1),
         [normal(3, 1), normal(3, 4), normal(3, 2)]),
    Case("concat_axis0", lambda a, b: en.concat([a, b], axis=0),
         lambda a, b: np.concatenate([a, b], axis=0), [normal(2, 3), normal(4, 3)]),
    # identities that must pass gradients through
    Case("print", lambda a: en.print_(a, message="value: ", stream=io.StringIO()),
         lambda a: a, [normal(3, 2)]),
    Case("dropout_not_training", lambda a: en.dropout(a, 0.5), lambda a: a, [normal(3, 2)]),
    # losses: fused, stable forwards
    Case("sigmoid_cross_entropy",
         lambda z: en.losses.sigmoid_cross_entropy(z, en.constant(BIN_LABELS)),
         lambda z: -np.mean(BIN_LABELS * np.log(np_sigmoid(z))
                            + (1 - BIN_LABELS) * np.log(1 - np_sigmoid(z))),
         [normal(6, 1, scale=3)]),
    Case("sigmoid_cross_entropy_soft_labels", en.losses.sigmoid_cross_entropy,
         lambda z, t: -np.mean(t * np.log(np_sigmoid(z)) + (1 - t) * np.log(1 - np_sigmoid(z))),
         [normal(4, 3), uniform(0.1, 0.9, 4, 3)]),
    Case("softmax_cross_entropy",
         lambda z: en.losses.softmax_cross_entropy(z, en.constant(INT_LABELS)),
         lambda z: -np.mean(np_log_softmax(z)[np.arange(7), INT_LABELS]),
         [normal(7, 4)]),
    Case("softmax_cross_entropy_distribution",
         lambda z: en.losses.softmax_cross_entropy(z, en.constant(DIST_LABELS)),
         lambda z: -np.mean(np.sum(DIST_LABELS * np_log_softmax(z), axis=1)),
         [normal(7, 4)]),
    Case("mse", en.losses.mse, lambda p, t: np.mean((p - t) ** 2), [normal(6, 3), normal(6, 3)]),
    Case("mse_broadcast_target", en.losses.mse, lambda p, t: np.mean((p - t) ** 2),
         [normal(6, 3), normal(3)]),
    Case("l2_penalty", lambda a, b: en.losses.l2_penalty([a, b], scale=0.3),
         lambda a, b: 0.15 * (np.sum(a * a) + np.sum(b * b)), [normal(3, 2), normal(2)]),
    # metrics: forward only
    Case("accuracy_classes", lambda z: en.metrics.accuracy(z, en.constant(ACC_LABELS)),
         lambda z: np.mean(np.argmax(z, axis=1) == ACC_LABELS), [normal(9, 3)],
         differentiable=False),
    Case("accuracy_binary_pm1", lambda z: en.metrics.accuracy(z, en.constant(2 * BIN_LABELS - 1)),
         lambda z: np.mean((z > 0) == (BIN_LABELS > 0)), [normal(6, 1)], differentiable=False),
]

GRADIENT_CASES = [c for c in CASES if c.differentiable]
