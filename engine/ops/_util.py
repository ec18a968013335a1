"""Helpers shared by the ops: summing broadcast gradients back to an input's shape."""

from __future__ import annotations

import numpy as np


def sum_to_shape(ctx, key, grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` over the axes numpy broadcast to reach it from ``shape``.

    The gradient of a broadcast input is the sum of the gradients of every copy it made.
    The result lives in a buffer of ``ctx`` (reused between runs).
    """
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead > 0 and grad.shape[lead:] == shape:  # a bias added to a batch: one reduction
        out = ctx.buffer(key, shape, grad.dtype)
        if lead == 1 and grad.ndim == 2 and grad.dtype.kind == "f":
            # A row of ones times the gradient: BLAS sums the columns 2-3x faster than
            # numpy's reduction along the first axis.
            ones = ctx.buffer((key, "ones"), grad.shape[:1], grad.dtype)
            ones.fill(1)
            return np.matmul(ones, grad, out=out)
        return np.add.reduce(grad, axis=tuple(range(lead)), out=out)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and grad.shape[lead + i] != 1)
    kept = tuple(1 if i in axes else d for i, d in enumerate(grad.shape))
    out = ctx.buffer(key, kept, grad.dtype)
    np.sum(grad, axis=axes, keepdims=True, out=out)
    return out.reshape(shape)
