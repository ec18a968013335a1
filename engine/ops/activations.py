"""Elementwise functions and activations: exp, log, sigmoid, tanh, relu, leaky_relu,
softmax and log_softmax.

Derivatives are written from the saved *output* where that is cheaper (exp, sigmoid, tanh).
"""

from __future__ import annotations

import numpy as np

from engine.graph import GraphError, Op


class _Unary(Op):
    """Activations are float-valued: an integer input gives the session's float dtype."""

    def infer(self, x):
        return x.shape, x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)

    @staticmethod
    def _dtype(ctx, x) -> np.dtype:
        return x.dtype if x.dtype.kind == "f" else ctx.float_dtype

    def _out(self, ctx, x):
        return ctx.buffer("out", x.shape, self._dtype(ctx, x))

    def _grad(self, ctx, x):
        return ctx.buffer("gx", x.shape, x.dtype)


class Exp(_Unary):
    type_name = "Exp"

    def forward(self, ctx, x):
        return np.exp(x, out=self._out(ctx, x))

    def backward(self, ctx, grad_output, x):
        return (np.multiply(grad_output, ctx.output, out=self._grad(ctx, x)),)


class Log(_Unary):
    type_name = "Log"

    def forward(self, ctx, x):
        return np.log(x, out=self._out(ctx, x))

    def backward(self, ctx, grad_output, x):
        return (np.divide(grad_output, x, out=self._grad(ctx, x)),)


class Sigmoid(_Unary):
    """``1 / (1 + exp(-x))``."""

    type_name = "Sigmoid"

    def forward(self, ctx, x):
        # NOTE: computed as (1 + tanh(x/2)) / 2, which never overflows (exp(-x) does for
        # x < -88 in float32) and needs one transcendental call.
        out = np.multiply(x, 0.5, out=self._out(ctx, x))
        np.tanh(out, out=out)
        np.multiply(out, 0.5, out=out)
        np.add(out, 0.5, out=out)
        return out

    def backward(self, ctx, grad_output, x):
        # s' = s (1 - s)
        s = ctx.output
        g = np.subtract(1.0, s, out=self._grad(ctx, x))
        np.multiply(g, s, out=g)
        np.multiply(g, grad_output, out=g)
        return (g,)


class Tanh(_Unary):
    type_name = "Tanh"

    def forward(self, ctx, x):
        return np.tanh(x, out=self._out(ctx, x))

    def backward(self, ctx, grad_output, x):
        # tanh' = 1 - tanh^2
        t = ctx.output
        g = np.multiply(t, t, out=self._grad(ctx, x))
        np.subtract(1.0, g, out=g)
        np.multiply(g, grad_output, out=g)
        return (g,)


class Relu(_Unary):
    type_name = "Relu"

    def forward(self, ctx, x):
        # NOTE: numpy's maximum against a scalar takes a slow loop, about 5x slower than
        # against an array of the same shape: zero the output and compare with it in place.
        out = self._out(ctx, x)
        out.fill(0)
        return np.maximum(x, out, out=out)

    def backward(self, ctx, grad_output, x):
        mask = np.greater(x, 0, out=ctx.buffer("mask", x.shape, np.bool_))
        # Multiplying by a float copy of the mask beats numpy's mixed bool * float loop.
        g = self._grad(ctx, x)
        np.copyto(g, mask)
        return (np.multiply(g, grad_output, out=g),)


class LeakyRelu(_Unary):
    """``x`` for ``x > 0``, ``alpha * x`` otherwise."""

    type_name = "LeakyRelu"

    def __init__(self, inputs, alpha: float, name=None):
        self.alpha = float(alpha)
        super().__init__(inputs, name)

    def forward(self, ctx, x):
        out = np.multiply(x, self.alpha, out=self._out(ctx, x))
        return np.maximum(x, out, out=out) if self.alpha <= 1 else np.minimum(x, out, out=out)

    def backward(self, ctx, grad_output, x):
        slope = ctx.buffer("slope", x.shape, x.dtype)
        slope.fill(self.alpha)
        np.copyto(slope, 1.0, where=x > 0)
        return (np.multiply(grad_output, slope, out=self._grad(ctx, x)),)


class _AlongAxis(_Unary):
    def __init__(self, inputs, axis: int, name=None):
        self.axis = int(axis)
        super().__init__(inputs, name)
        if self.shape is not None and not -len(self.shape) <= self.axis < len(self.shape):
            raise GraphError(f"{self.type_name} '{self.name}': axis {axis} out of range for "
                             f"shape {self.shape}")

    def _reduced(self, ctx, key, x):
        shape = list(x.shape)
        shape[self.axis] = 1
        return ctx.buffer(key, tuple(shape), self._dtype(ctx, x))


class Softmax(_AlongAxis):
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``."""

    type_name = "Softmax"

    def forward(self, ctx, x):
        m = np.max(x, axis=self.axis, keepdims=True, out=self._reduced(ctx, "m", x))
        out = np.subtract(x, m, out=self._out(ctx, x))
        np.exp(out, out=out)
        s = np.sum(out, axis=self.axis, keepdims=True, out=self._reduced(ctx, "s", x))
        return np.divide(out, s, out=out)

    def backward(self, ctx, grad_output, x):
        # dx = s * (g - sum(g * s))
        s = ctx.output
        g = np.multiply(grad_output, s, out=self._grad(ctx, x))
        dot = np.sum(g, axis=self.axis, keepdims=True, out=self._reduced(ctx, "dot", x))
        np.subtract(grad_output, dot, out=g)
        return (np.multiply(g, s, out=g),)


class LogSoftmax(_AlongAxis):
    """``x - max - log(sum(exp(x - max)))`` along ``axis``."""

    type_name = "LogSoftmax"

    def forward(self, ctx, x):
        m = np.max(x, axis=self.axis, keepdims=True, out=self._reduced(ctx, "m", x))
        out = np.subtract(x, m, out=self._out(ctx, x))
        e = np.exp(out, out=ctx.buffer("e", x.shape, out.dtype))
        lse = np.sum(e, axis=self.axis, keepdims=True, out=self._reduced(ctx, "lse", x))
        np.log(lse, out=lse)
        return np.subtract(out, lse, out=out)

    def backward(self, ctx, grad_output, x):
        # dx = g - softmax * sum(g)
        total = np.sum(grad_output, axis=self.axis, keepdims=True,
                       out=self._reduced(ctx, "total", x))
        g = np.exp(ctx.output, out=self._grad(ctx, x))
        np.multiply(g, total, out=g)
        return (np.subtract(grad_output, g, out=g),)


def exp(x, name: str | None = None) -> Op:
    """``e ** x`` elementwise."""
    return Exp((x,), name)


def log(x, name: str | None = None) -> Op:
    """Natural logarithm, elementwise."""
    return Log((x,), name)


def sigmoid(x, name: str | None = None) -> Op:
    """``1 / (1 + e ** -x)`` elementwise."""
    return Sigmoid((x,), name)


def tanh(x, name: str | None = None) -> Op:
    """Hyperbolic tangent, elementwise."""
    return Tanh((x,), name)


def relu(x, name: str | None = None) -> Op:
    """``max(x, 0)`` elementwise."""
    return Relu((x,), name)


def leaky_relu(x, alpha: float = 0.01, name: str | None = None) -> Op:
    """``x`` where positive, ``alpha * x`` elsewhere."""
    return LeakyRelu((x,), alpha, name)


def softmax(x, axis: int = -1, name: str | None = None) -> Op:
    """Softmax along ``axis`` (default the last): ``(batch, classes) -> (batch, classes)``."""
    return Softmax((x,), axis, name)


def log_softmax(x, axis: int = -1, name: str | None = None) -> Op:
    """Log of the softmax along ``axis``, computed stably."""
    return LogSoftmax((x,), axis, name)
