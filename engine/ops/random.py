"""Dropout: the one op that draws random numbers (from the session's generator)."""

from __future__ import annotations

import numpy as np

from engine.graph import GraphError, Op


class Dropout(Op):
    """Zero each element with probability ``rate`` and scale the rest by ``1 / (1 - rate)``.

    Active only when the session runs in training mode: ``Session.run(..., training=True)``,
    which is the default whenever the fetches include an optimizer's train op. Otherwise it
    is the identity. The mask comes from the session's generator, which a checkpoint saves,
    so a resumed run draws the same masks.
    """

    type_name = "Dropout"

    def __init__(self, inputs, rate: float, name=None):
        if not 0.0 <= float(rate) < 1.0:
            raise GraphError(f"dropout rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        super().__init__(inputs, name)

    def infer(self, x):
        if x.dtype.kind != "f":
            raise GraphError(f"dropout of {x.describe()}: the input must be floating point")
        return x.shape, x.dtype

    def forward(self, ctx, x):
        ctx.active = ctx.training and self.rate > 0
        if not ctx.active:
            return x
        # NOTE: the generator fills float32 or float64 directly (dtype must match ``out``).
        noise = ctx.rng.random(dtype=x.dtype, out=ctx.buffer("noise", x.shape, x.dtype))
        keep = np.greater_equal(noise, self.rate, out=ctx.buffer("keep", x.shape, np.bool_))
        ctx.keep = keep  # backward reads the mask from here, not from a buffer key
        out = np.multiply(x, keep, out=ctx.buffer("out", x.shape, x.dtype))
        return np.multiply(out, 1.0 / (1.0 - self.rate), out=out)

    def backward(self, ctx, grad_output, x):
        if not ctx.active:
            return (grad_output,)
        g = np.multiply(grad_output, ctx.keep, out=ctx.buffer("gx", x.shape, x.dtype))
        return (np.multiply(g, 1.0 / (1.0 - self.rate), out=g),)


def dropout(x, rate: float, name: str | None = None) -> Op:
    """Inverted dropout with drop probability ``rate`` (training mode only)."""
    return Dropout((x,), rate, name)
