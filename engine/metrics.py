"""Metrics: forward-only ops (no gradient)."""

from __future__ import annotations

import numpy as np

from engine.graph import GraphError, Node, Op, format_shape


class Accuracy(Op):
    """Fraction of correct predictions.

    With ``logits (batch, classes)`` and integer ``labels (batch,)``: argmax equals label.
    With one logit per example (``(batch,)`` or ``(batch, 1)``): the prediction is positive
    when the logit is above ``threshold`` (0, i.e. probability 0.5), and a label counts as
    positive when it is above 0 — so labels in {0, 1} and in {-1, +1} both work.
    """

    type_name = "Accuracy"
    differentiable = False

    def __init__(self, inputs, threshold: float = 0.0, name=None):
        self.threshold = float(threshold)
        super().__init__(inputs, name)

    def infer(self, logits: Node, labels: Node):
        if logits.shape is not None and len(logits.shape) not in (1, 2):
            raise GraphError(f"accuracy: logits {logits.name!r} must be (batch,) or "
                             f"(batch, classes), got {format_shape(logits.shape)}")
        return (), np.dtype(np.float32)

    def forward(self, ctx, logits, labels):
        out = ctx.buffer("out", (), ctx.float_dtype)
        binary = logits.ndim == 1 or logits.shape[1] == 1
        if binary:
            predicted = logits.reshape(-1) > self.threshold
            actual = labels.reshape(-1) > 0
        else:
            predicted = np.argmax(logits, axis=1)
            actual = labels if labels.ndim == 1 else np.argmax(labels, axis=1)
        if predicted.shape != actual.shape:
            raise GraphError(f"accuracy: {predicted.shape[0]} predictions for "
                             f"{actual.shape[0]} labels")
        out[...] = np.count_nonzero(predicted == actual) / max(predicted.size, 1)
        return out


def accuracy(logits, labels, threshold: float = 0.0, name: str | None = None) -> Op:
    """Fraction of examples classified correctly (see :class:`Accuracy`)."""
    return Accuracy((logits, labels), threshold, name)
