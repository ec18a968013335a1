"""Sums and means over axes."""

from __future__ import annotations

import numpy as np

from engine.graph import GraphError, Op


def _normalize_axes(axis, ndim: int | None, label: str):
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if ndim is None:
        return axes
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise GraphError(f"{label}: axis {a} out of range for a {ndim}-D input")
        out.append(a % ndim)
    return tuple(sorted(set(out)))


class Sum(Op):
    """Sum over ``axis`` (all axes when ``None``)."""

    type_name = "Sum"
    float_valued = False  # Mean: integers in, the session's float out

    def __init__(self, inputs, axis=None, keepdims: bool = False, name=None):
        self.axis_arg, self.keepdims = axis, bool(keepdims)
        super().__init__(inputs, name)

    def infer(self, x):
        self.axes = _normalize_axes(self.axis_arg, x.ndim, f"{self.type_name}")
        dtype = np.dtype(np.float32) if self.float_valued and x.dtype.kind != "f" else x.dtype
        if x.shape is None:
            return None, dtype
        axes = range(len(x.shape)) if self.axes is None else self.axes
        if self.keepdims:
            return tuple(1 if i in axes else d for i, d in enumerate(x.shape)), dtype
        return tuple(d for i, d in enumerate(x.shape) if i not in axes), dtype

    def _axes(self, x):
        return tuple(range(x.ndim)) if self.axes is None else tuple(a % x.ndim for a in self.axes)

    def forward(self, ctx, x):
        axes = self._axes(x)
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if self.keepdims \
            else tuple(d for i, d in enumerate(x.shape) if i not in axes)
        dtype = ctx.float_dtype if self.float_valued and x.dtype.kind != "f" else x.dtype
        return np.sum(x, axis=axes, keepdims=self.keepdims, out=ctx.buffer("out", shape, dtype))

    def _expand(self, grad_output, x):
        """The output gradient with the reduced axes back as size 1, broadcast to ``x``."""
        axes = self._axes(x)
        kept = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        return np.broadcast_to(grad_output.reshape(kept), x.shape)

    def backward(self, ctx, grad_output, x):
        return (self._expand(grad_output, x),)


class Mean(Sum):
    """Mean over ``axis`` (all axes when ``None``)."""

    type_name = "Mean"
    float_valued = True

    def forward(self, ctx, x):
        out = super().forward(ctx, x)
        count = x.size // max(out.size, 1) if x.size else 1
        return np.divide(out, count, out=out)

    def backward(self, ctx, grad_output, x):
        count = x.size // max(grad_output.size, 1) if x.size else 1
        g = ctx.buffer("gx", x.shape, x.dtype)
        return (np.divide(self._expand(grad_output, x), count, out=g),)


def reduce_sum(x, axis=None, keepdims: bool = False, name: str | None = None) -> Op:
    """Sum of ``x`` over ``axis`` (an int, a tuple, or ``None`` for all)."""
    return Sum((x,), axis, keepdims, name)


def reduce_mean(x, axis=None, keepdims: bool = False, name: str | None = None) -> Op:
    """Mean of ``x`` over ``axis`` (an int, a tuple, or ``None`` for all)."""
    return Mean((x,), axis, keepdims, name)
