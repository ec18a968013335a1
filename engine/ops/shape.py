"""Reshape, transpose and concatenation: they move values, so their gradients move back."""

from __future__ import annotations

import math

import numpy as np

from engine.graph import GraphError, Op, format_shape


class Reshape(Op):
    """Reshape to ``shape``; one entry may be ``-1`` (or ``None``) to be inferred."""

    type_name = "Reshape"

    def __init__(self, inputs, shape, name=None):
        self.target = tuple(-1 if d is None else int(d) for d in shape)
        if sum(d == -1 for d in self.target) > 1:
            raise GraphError(f"reshape to {shape}: at most one dimension may be -1")
        super().__init__(inputs, name)

    def infer(self, x):
        out = tuple(None if d == -1 else d for d in self.target)
        if x.shape is not None and None not in x.shape:
            known = math.prod(d for d in self.target if d != -1)
            total = math.prod(x.shape)
            if (-1 not in self.target and known != total) or (known and total % known):
                raise GraphError(f"cannot reshape {x.name!r} of shape {format_shape(x.shape)} to "
                                 f"{self.target}")
            if -1 in self.target:
                out = tuple(total // known if d == -1 else d for d in self.target)
        return out, x.dtype

    def forward(self, ctx, x):
        try:
            return x.reshape(self.target)
        except ValueError:
            raise GraphError(f"reshape '{self.name}': cannot reshape an array of shape "
                             f"{x.shape} to {self.target}") from None

    def backward(self, ctx, grad_output, x):
        return (grad_output.reshape(x.shape),)


class Transpose(Op):
    """Permute axes (reverse them when ``axes`` is ``None``)."""

    type_name = "Transpose"

    def __init__(self, inputs, axes=None, name=None):
        self.axes = None if axes is None else tuple(int(a) for a in axes)
        super().__init__(inputs, name)

    def infer(self, x):
        if x.shape is None:
            return None, x.dtype
        ndim = len(x.shape)
        axes = self.axes if self.axes is not None else tuple(reversed(range(ndim)))
        if sorted(a % ndim if -ndim <= a < ndim else a for a in axes) != list(range(ndim)):
            raise GraphError(f"transpose of {x.name!r} (shape {format_shape(x.shape)}): axes "
                             f"{axes} are not a permutation")
        if self.axes is not None:  # negative axes count from the end, as in numpy
            self.axes = tuple(a % ndim for a in self.axes)
        return tuple(x.shape[a] for a in self.axes or axes), x.dtype

    def forward(self, ctx, x):
        return x.transpose(self.axes)

    def backward(self, ctx, grad_output, x):
        if self.axes is None:
            return (grad_output.transpose(),)
        return (grad_output.transpose(np.argsort(self.axes)),)


class Concat(Op):
    """Join inputs along ``axis``; every other dimension must agree."""

    type_name = "ConcatV2"

    def __init__(self, inputs, axis: int, name=None):
        self.axis = int(axis)
        super().__init__(inputs, name)

    def infer(self, *xs):
        if not xs:
            raise GraphError("concat needs at least one input")
        shapes = [x.shape for x in xs]
        if any(s is None for s in shapes):
            return None, xs[0].dtype
        ndim = len(shapes[0])
        if any(len(s) != ndim for s in shapes) or not -ndim <= self.axis < ndim:
            raise GraphError(f"concat along axis {self.axis}: inputs have shapes "
                             f"{', '.join(format_shape(s) for s in shapes)}")
        axis = self.axis % ndim
        out = list(shapes[0])
        for s in shapes[1:]:
            for i, (d0, d) in enumerate(zip(out, s)):
                if i == axis:
                    continue
                if d0 is not None and d is not None and d0 != d:
                    raise GraphError(f"concat along axis {self.axis}: inputs have shapes "
                                     f"{', '.join(format_shape(s) for s in shapes)}")
                out[i] = d0 if d0 is not None else d
        sizes = [s[axis] for s in shapes]
        out[axis] = None if None in sizes else sum(sizes)
        dtypes = {x.dtype for x in xs}
        return tuple(out), xs[0].dtype if len(dtypes) == 1 else np.dtype(np.float32)

    def forward(self, ctx, *xs):
        axis = self.axis % xs[0].ndim
        shape = list(xs[0].shape)
        shape[axis] = sum(x.shape[axis] for x in xs)
        dtype = xs[0].dtype if all(x.dtype == xs[0].dtype for x in xs) else ctx.promote(*xs)
        return np.concatenate(xs, axis=axis, out=ctx.buffer("out", tuple(shape), dtype))

    def backward(self, ctx, grad_output, *xs):
        axis = self.axis % grad_output.ndim
        grads, start = [], 0
        for x, need in zip(xs, ctx.needs_grad):
            stop = start + x.shape[axis]
            index = [slice(None)] * grad_output.ndim
            index[axis] = slice(start, stop)
            grads.append(grad_output[tuple(index)] if need else None)
            start = stop
        return tuple(grads)


def reshape(x, shape, name: str | None = None) -> Op:
    """``x`` with a new shape; use ``-1`` for the one inferred dimension (e.g. the batch)."""
    return Reshape((x,), shape, name)


def transpose(x, axes=None, name: str | None = None) -> Op:
    """``x`` with its axes permuted (reversed by default)."""
    return Transpose((x,), axes, name)


def concat(values, axis: int = -1, name: str | None = None) -> Op:
    """Concatenate a list of nodes along ``axis``."""
    return Concat(tuple(values), axis, name)
