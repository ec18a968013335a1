"""Sums and means over axes."""

from __future__ import annotations

import math
from typing import NamedTuple

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


class _Layout(NamedTuple):
    """How a reduction treats an input of one shape."""

    axes: tuple      # the reduced axes, non-negative
    shape: tuple     # the output's shape
    kept: tuple      # the output's shape with the reduced axes kept as 1
    count: int       # how many input values each output value reduces (1 for an empty input)


class Sum(Op):
    """Sum over ``axis`` (all axes when ``None``)."""

    type_name = "Sum"
    float_valued = False  # Mean: integers in, the session's float out

    def __init__(self, inputs, axis=None, keepdims: bool = False, name=None):
        self.axis_arg, self.keepdims = axis, bool(keepdims)
        self._layouts: dict[tuple, _Layout] = {}
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

    def _layout(self, shape: tuple) -> _Layout:
        """The layout for an input of ``shape``, computed once per shape: building its
        tuples on every run cost as much as a small sum itself."""
        layout = self._layouts.get(shape)
        if layout is None:
            ndim = len(shape)
            axes = tuple(range(ndim)) if self.axes is None else tuple(a % ndim
                                                                       for a in self.axes)
            kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
            out = kept if self.keepdims else tuple(d for i, d in enumerate(shape)
                                                   if i not in axes)
            size = math.prod(shape)
            count = size // max(math.prod(out), 1) if size else 1
            layout = self._layouts[shape] = _Layout(axes, out, kept, count)
        return layout

    def forward(self, ctx, x):
        layout = self._layout(x.shape)
        dtype = ctx.float_dtype if self.float_valued and x.dtype.kind != "f" else x.dtype
        return np.sum(x, axis=layout.axes, keepdims=self.keepdims,
                      out=ctx.buffer("out", layout.shape, dtype))

    def backward(self, ctx, grad_output, x):
        # The output gradient with the reduced axes back as size 1, broadcast to x (a view).
        return (np.broadcast_to(grad_output.reshape(self._layout(x.shape).kept), x.shape),)


class Mean(Sum):
    """Mean over ``axis`` (all axes when ``None``)."""

    type_name = "Mean"
    float_valued = True

    def forward(self, ctx, x):
        out = super().forward(ctx, x)
        return np.divide(out, self._layout(x.shape).count, out=out)

    def backward(self, ctx, grad_output, x):
        layout = self._layout(x.shape)
        # The division broadcasts the reduced axes into the buffer: np.broadcast_to's view
        # would cost more than the division.
        return (np.divide(grad_output.reshape(layout.kept), layout.count,
                          out=ctx.buffer("gx", x.shape, x.dtype)),)


def reduce_sum(x, axis=None, keepdims: bool = False, name: str | None = None) -> Op:
    """Sum of ``x`` over ``axis`` (an int, a tuple, or ``None`` for all)."""
    return Sum((x,), axis, keepdims, name)


def reduce_mean(x, axis=None, keepdims: bool = False, name: str | None = None) -> Op:
    """Mean of ``x`` over ``axis`` (an int, a tuple, or ``None`` for all)."""
    return Mean((x,), axis, keepdims, name)
