"""Losses. The two classification losses are fused with their output non-linearity: stable
forwards and the ``(p - t) / N`` gradient, as in the lectures and scikit-learn's MLP.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engine.graph import GraphError, Node, Op, Variable, format_shape
from engine.ops.arithmetic import add, mul
from engine.ops.reductions import reduce_sum

SCALAR = ()


class SigmoidCrossEntropy(Op):
    """Mean over all elements of ``-t log(s(z)) - (1 - t) log(1 - s(z))``, ``s`` the sigmoid.

    Forward as ``max(z, 0) - z t + log(1 + exp(-|z|))`` (never overflows);
    gradient ``(s(z) - t) / N`` for ``N`` elements.
    """

    type_name = "SigmoidCrossEntropy"

    def infer(self, logits: Node, labels: Node):
        if logits.shape is not None and labels.shape is not None:
            if len(logits.shape) != len(labels.shape) or any(
                    a is not None and b is not None and a != b
                    for a, b in zip(logits.shape, labels.shape)):
                raise GraphError(f"sigmoid_cross_entropy: logits {logits.name!r} of shape "
                                 f"{format_shape(logits.shape)} and labels {labels.name!r} of "
                                 f"shape {format_shape(labels.shape)} differ")
        return SCALAR, logits.dtype

    def forward(self, ctx, z, t):
        shape, dtype = z.shape, z.dtype
        if t.dtype != dtype:
            t = t.astype(dtype)
        # s = sigmoid(z), kept for backward
        s = np.multiply(z, 0.5, out=ctx.buffer("s", shape, dtype))
        np.tanh(s, out=s)
        np.multiply(s, 0.5, out=s)
        np.add(s, 0.5, out=s)
        ctx.s, ctx.t = s, t
        a = np.abs(z, out=ctx.buffer("a", shape, dtype))
        np.negative(a, out=a)
        np.exp(a, out=a)
        np.log1p(a, out=a)  # log(1 + exp(-|z|))
        b = np.maximum(z, 0, out=ctx.buffer("b", shape, dtype))
        np.add(a, b, out=a)
        np.multiply(z, t, out=b)
        np.subtract(a, b, out=a)
        out = ctx.buffer("out", (), dtype)
        out[...] = a.sum() / max(a.size, 1)
        return out

    def backward(self, ctx, grad_output, z, t):
        need_z, need_t = ctx.needs_grad
        scale = grad_output / max(z.size, 1)
        gz = gt = None
        if need_z:
            gz = np.subtract(ctx.s, ctx.t, out=ctx.buffer("gz", z.shape, z.dtype))
            np.multiply(gz, scale, out=gz)
        if need_t:
            gt = np.multiply(z, -scale, out=ctx.buffer("gt", z.shape, z.dtype))
        return gz, gt


class SoftmaxCrossEntropy(Op):
    """Mean over the batch of ``-log softmax(z)[label]``.

    ``logits`` is ``(batch, classes)``; ``labels`` integer class ids ``(batch,)`` or a float
    distribution ``(batch, classes)``. Forward with the log-sum-exp trick; gradient
    ``(softmax(z) - onehot) / batch``.
    """

    type_name = "SoftmaxCrossEntropy"

    def infer(self, logits: Node, labels: Node):
        if logits.shape is not None and len(logits.shape) != 2:
            raise GraphError(f"softmax_cross_entropy: logits {logits.name!r} must be "
                             f"(batch, classes), got {format_shape(logits.shape)}")
        if labels.shape is not None and logits.shape is not None:
            ok = (labels.dtype.kind in "iu" and len(labels.shape) == 1) or (
                labels.dtype.kind == "f" and len(labels.shape) == 2)
            if not ok:
                raise GraphError(f"softmax_cross_entropy: labels {labels.name!r} must be integer "
                                 "class ids (batch,) or a float distribution (batch, classes), "
                                 f"got {format_shape(labels.shape)} {labels.dtype.name}")
        return SCALAR, logits.dtype

    def forward(self, ctx, z, labels):
        n, c = z.shape
        dtype = z.dtype
        # NOTE: numpy reduces along a short last axis (the classes) one row at a time, about
        # 5x slower than along the first axis: work on the transposed logits (classes, batch).
        log_p = ctx.buffer("log_p", (c, n), dtype)
        np.copyto(log_p, z.T)
        m = np.maximum.reduce(log_p, axis=0, out=ctx.buffer("m", (n,), dtype))
        np.subtract(log_p, m, out=log_p)
        e = np.exp(log_p, out=ctx.buffer("e", (c, n), dtype))
        lse = np.add.reduce(e, axis=0, out=ctx.buffer("lse", (n,), dtype))
        np.log(lse, out=lse)
        np.subtract(log_p, lse, out=log_p)  # log-softmax, (classes, batch)
        out = ctx.buffer("out", (), dtype)
        if labels.dtype.kind in "iu":
            if labels.shape != (n,):
                raise GraphError(f"softmax_cross_entropy: labels of shape {labels.shape} for "
                                 f"logits of shape {z.shape}")
            # One reduction checks both ends: seen as unsigned, negative ids are huge.
            if n and labels.view(labels.dtype.str.replace("i", "u")).max() >= c:
                raise GraphError(f"softmax_cross_entropy: labels must be in [0, {c}), got "
                                 f"values from {labels.min()} to {labels.max()}")
            out[...] = -log_p[labels, _rows(ctx, n)].sum() / max(n, 1)
        else:
            out[...] = -np.multiply(log_p, labels.T, out=e).sum() / max(n, 1)
        ctx.log_p = log_p
        return out

    def backward(self, ctx, grad_output, z, labels):
        need_z, need_labels = ctx.needs_grad
        n = max(z.shape[0], 1)
        scale = grad_output / n
        log_p = ctx.log_p  # (classes, batch)
        gz = gl = None
        if need_z:
            p = np.exp(log_p, out=ctx.buffer("p", log_p.shape, log_p.dtype))
            if labels.dtype.kind in "iu":
                p[labels, _rows(ctx, z.shape[0])] -= 1
            else:
                np.subtract(p, labels.T, out=p)
            gz = np.multiply(p.T, scale, out=ctx.buffer("gz", z.shape, z.dtype))
        if need_labels:
            gl = np.multiply(log_p.T, -scale, out=ctx.buffer("gl", z.shape, z.dtype))
        return gz, gl


def _rows(ctx, n: int) -> np.ndarray:
    """``arange(n)``, kept on ``ctx``: the row indices that pick each example's label."""
    rows = getattr(ctx, "rows", None)
    if rows is None or len(rows) != n:
        rows = ctx.rows = np.arange(n)
    return rows


class MeanSquaredError(Op):
    """Mean over all elements of ``(prediction - target)²``; gradient ``2 (p - t) / N``."""

    type_name = "MeanSquaredError"

    def infer(self, prediction: Node, target: Node):
        from engine.graph import broadcast_shapes
        broadcast_shapes(prediction.shape, target.shape,
                         lambda: f"mse of {prediction.name!r} and {target.name!r}")
        return SCALAR, prediction.dtype

    def forward(self, ctx, p, t):
        shape = np.broadcast_shapes(p.shape, t.shape)
        d = np.subtract(p, t, out=ctx.buffer("d", shape, ctx.promote(p, t)))
        ctx.diff = d
        out = ctx.buffer("out", (), d.dtype)
        out[...] = np.vdot(d, d) / max(d.size, 1)
        return out

    def backward(self, ctx, grad_output, p, t):
        from engine.ops._util import sum_to_shape
        need_p, need_t = ctx.needs_grad
        d = ctx.diff
        g = np.multiply(d, grad_output * (2.0 / max(d.size, 1)),
                        out=ctx.buffer("g", d.shape, d.dtype))
        gp = sum_to_shape(ctx, "gp", g, p.shape) if need_p else None
        gt = None
        if need_t:
            neg = np.negative(g, out=ctx.buffer("neg", d.shape, d.dtype))
            gt = sum_to_shape(ctx, "gt", neg, t.shape)
        return gp, gt


def sigmoid_cross_entropy(logits, labels, name: str | None = None) -> Op:
    """Binary log-loss on logits: ``logits`` and ``labels`` (0 or 1) of the same shape."""
    return SigmoidCrossEntropy((logits, labels), name)


def softmax_cross_entropy(logits, labels, name: str | None = None) -> Op:
    """Multiclass log-loss: ``logits (batch, classes)``, ``labels`` class ids ``(batch,)``."""
    return SoftmaxCrossEntropy((logits, labels), name)


def mse(prediction, target, name: str | None = None) -> Op:
    """Mean squared error over all elements."""
    return MeanSquaredError((prediction, target), name)


def l2_penalty(weights: Sequence[Node], scale: float, name: str = "l2_penalty") -> Node:
    """``scale / 2 * Σ ||w||²`` over ``weights``; add it to a loss for weight decay.

    ``weights`` is a list of nodes, typically kernels (``[v for v in trainable_variables(loss)
    if v.name.endswith('/kernel')]``).
    """
    weights = list(weights)
    if not weights:
        raise GraphError("l2_penalty needs at least one weight")
    total = None
    for i, w in enumerate(weights):
        if not isinstance(w, (Variable, Node)):
            raise GraphError(f"l2_penalty: weight {i} is not a graph node")
        term = reduce_sum(mul(w, w), name=f"{name}/Sum")
        total = term if total is None else add(total, term, name=f"{name}/Add")
    return mul(total, 0.5 * float(scale), name=f"{name}/Mul")
