"""Arithmetic with numpy broadcasting, and the matrix product.

Gradients of broadcast inputs are summed back to the input's shape (``sum_to_shape``).
"""

from __future__ import annotations

import numpy as np

from engine.graph import GraphError, Node, Op, broadcast_shapes, format_shape, result_dtype
from engine.ops._util import sum_to_shape


# ----------------------------------------------------------------- elementwise binary ops

class _Binary(Op):
    float_valued = False  # true division: integers in, the session's float out

    def infer(self, a: Node, b: Node):
        shape = broadcast_shapes(a.shape, b.shape,
                                 lambda: f"{self._label()} of {a.name!r} and {b.name!r}")
        dtype = result_dtype(a, b)
        return shape, np.dtype(np.float32) if self.float_valued and dtype.kind != "f" else dtype

    def _label(self) -> str:
        return f"{self.type_name} '{self.given_name}'" if self.given_name else self.type_name

    def _out(self, ctx, a, b):
        sa, sb = a.shape, b.shape
        try:
            # The common cases (equal shapes, a bias added to a batch) without numpy's
            # general broadcast_shapes, which costs more than the addition itself.
            shape = sa if sa == sb or (len(sb) <= len(sa) and sa[len(sa) - len(sb):] == sb) \
                else np.broadcast_shapes(sa, sb)
        except ValueError:  # shapes known only when fed
            raise GraphError(f"{self._label()}: shapes {format_shape(a.shape)} and "
                             f"{format_shape(b.shape)} do not broadcast") from None
        dtype = a.dtype if a.dtype == b.dtype else ctx.promote(a, b)
        if self.float_valued and dtype.kind != "f":
            dtype = ctx.float_dtype
        return ctx.buffer("out", shape, dtype)


class Add(_Binary):
    type_name = "Add"

    def forward(self, ctx, a, b):
        return np.add(a, b, out=self._out(ctx, a, b))

    def backward(self, ctx, grad_output, a, b):
        need_a, need_b = ctx.needs_grad
        return (sum_to_shape(ctx, "ga", grad_output, a.shape) if need_a else None,
                sum_to_shape(ctx, "gb", grad_output, b.shape) if need_b else None)


class Sub(_Binary):
    type_name = "Sub"

    def forward(self, ctx, a, b):
        return np.subtract(a, b, out=self._out(ctx, a, b))

    def backward(self, ctx, grad_output, a, b):
        need_a, need_b = ctx.needs_grad
        gb = None
        if need_b:
            neg = np.negative(grad_output, out=ctx.buffer("neg", grad_output.shape,
                                                          grad_output.dtype))
            gb = sum_to_shape(ctx, "gb", neg, b.shape)
        return (sum_to_shape(ctx, "ga", grad_output, a.shape) if need_a else None, gb)


class Mul(_Binary):
    type_name = "Mul"

    def forward(self, ctx, a, b):
        return np.multiply(a, b, out=self._out(ctx, a, b))

    def backward(self, ctx, grad_output, a, b):
        need_a, need_b = ctx.needs_grad
        shape, dtype = grad_output.shape, grad_output.dtype
        ga = gb = None
        if need_a:
            ga = sum_to_shape(ctx, "ga", np.multiply(grad_output, b,
                                                     out=ctx.buffer("ta", shape, dtype)), a.shape)
        if need_b:
            gb = sum_to_shape(ctx, "gb", np.multiply(grad_output, a,
                                                     out=ctx.buffer("tb", shape, dtype)), b.shape)
        return ga, gb


class Div(_Binary):
    type_name = "RealDiv"
    float_valued = True

    def forward(self, ctx, a, b):
        return np.divide(a, b, out=self._out(ctx, a, b))

    def backward(self, ctx, grad_output, a, b):
        need_a, need_b = ctx.needs_grad
        shape, dtype = grad_output.shape, grad_output.dtype
        ga = gb = None
        if need_a:
            ga = sum_to_shape(ctx, "ga", np.divide(grad_output, b,
                                                   out=ctx.buffer("ta", shape, dtype)), a.shape)
        if need_b:
            # d(a/b)/db = -(a/b)/b
            t = np.divide(ctx.output, b, out=ctx.buffer("tb", shape, dtype))
            np.multiply(t, grad_output, out=t)
            np.negative(t, out=t)
            gb = sum_to_shape(ctx, "gb", t, b.shape)
        return ga, gb


class Pow(_Binary):
    type_name = "Pow"

    def forward(self, ctx, a, b):
        return np.power(a, b, out=self._out(ctx, a, b))

    def backward(self, ctx, grad_output, a, b):
        need_a, need_b = ctx.needs_grad
        shape, dtype = grad_output.shape, grad_output.dtype
        ga = gb = None
        if need_a:
            # d(a^b)/da = b * a^(b-1)
            t = np.power(a, b - 1, out=ctx.buffer("ta", shape, dtype))
            np.multiply(t, b, out=t)
            np.multiply(t, grad_output, out=t)
            ga = sum_to_shape(ctx, "ga", t, a.shape)
        if need_b:
            # d(a^b)/db = a^b * log(a); NOTE: defined for a > 0 only.
            t = np.log(np.broadcast_to(a, shape), out=ctx.buffer("tb", shape, dtype))
            np.multiply(t, ctx.output, out=t)
            np.multiply(t, grad_output, out=t)
            gb = sum_to_shape(ctx, "gb", t, b.shape)
        return ga, gb


class Neg(Op):
    type_name = "Neg"

    def forward(self, ctx, x):
        return np.negative(x, out=ctx.buffer("out", x.shape, x.dtype))

    def backward(self, ctx, grad_output, x):
        return (np.negative(grad_output, out=ctx.buffer("gx", x.shape, x.dtype)),)


def add(a, b, name: str | None = None) -> Op:
    """``a + b`` with numpy broadcasting."""
    return Add((a, b), name)


def sub(a, b, name: str | None = None) -> Op:
    """``a - b`` with numpy broadcasting."""
    return Sub((a, b), name)


def mul(a, b, name: str | None = None) -> Op:
    """``a * b`` elementwise, with numpy broadcasting."""
    return Mul((a, b), name)


def div(a, b, name: str | None = None) -> Op:
    """``a / b`` elementwise, with numpy broadcasting."""
    return Div((a, b), name)


def pow(a, b, name: str | None = None) -> Op:  # noqa: A001 - mirrors the ** operator
    """``a ** b`` elementwise; the gradient in ``b`` needs ``a > 0``."""
    return Pow((a, b), name)


def neg(x, name: str | None = None) -> Op:
    """``-x``."""
    return Neg((x,), name)


# ----------------------------------------------------------------- matrix product

class MatMul(Op):
    """``(n, k) @ (k, m) -> (n, m)``; gradients ``dA = dZ Bᵀ`` and ``dB = Aᵀ dZ``."""

    type_name = "MatMul"

    def infer(self, a: Node, b: Node):
        label = f"matmul '{self.given_name or 'MatMul'}'"
        for side, n in (("left", a), ("right", b)):
            if n.shape is not None and len(n.shape) != 2:
                raise GraphError(f"{label}: the {side} operand {n.name!r} must be 2-D, got shape "
                                 f"{format_shape(n.shape)}")
        if a.shape is not None and b.shape is not None:
            ka, kb = a.shape[1], b.shape[0]
            if ka is not None and kb is not None and ka != kb:
                raise GraphError(f"{label}: inner dimensions differ: {format_shape(a.shape)} @ "
                                 f"{format_shape(b.shape)} ({a.name!r} @ {b.name!r})")
            return (a.shape[0], b.shape[1]), result_dtype(a, b)
        return None, result_dtype(a, b)

    def forward(self, ctx, a, b):
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:  # shapes known only when fed
            raise GraphError(f"matmul '{self.given_name or self.type_name}': cannot multiply "
                             f"{format_shape(a.shape)} @ {format_shape(b.shape)}")
        dtype = a.dtype if a.dtype == b.dtype else ctx.promote(a, b)
        return np.matmul(a, b, out=ctx.buffer("out", (a.shape[0], b.shape[1]), dtype))

    def backward(self, ctx, grad_output, a, b):
        need_a, need_b = ctx.needs_grad
        ga = np.matmul(grad_output, b.T, out=ctx.buffer("ga", a.shape, a.dtype)) if need_a \
            else None
        gb = np.matmul(a.T, grad_output, out=ctx.buffer("gb", b.shape, b.dtype)) if need_b \
            else None
        return ga, gb


def matmul(a, b, name: str | None = None) -> Op:
    """Matrix product of two 2-D nodes: ``(n, k) @ (k, m) -> (n, m)``."""
    return MatMul((a, b), name)
