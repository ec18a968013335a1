"""Print: an identity op that logs chosen values when it runs (like ``tf.Print``)."""

from __future__ import annotations

import sys

import numpy as np

from engine.graph import Op


class Print(Op):
    """Returns its first input unchanged and writes ``message`` and the other inputs' values."""

    type_name = "Print"

    def __init__(self, inputs, message: str = "", summarize: int = 3, stream=None, name=None):
        self.message, self.summarize, self.stream = message, int(summarize), stream
        super().__init__(inputs, name)

    def forward(self, ctx, x, *data):
        with np.printoptions(threshold=self.summarize, edgeitems=self.summarize, precision=6):
            text = " ".join(np.array2string(np.asarray(d)) for d in data)
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(f"{self.message}{text}\n")
        return x

    def backward(self, ctx, grad_output, x, *data):
        return (grad_output,) + (None,) * len(data)


def print_(x, data=None, message: str = "", summarize: int = 3, stream=None,
           name: str | None = None) -> Op:
    """Identity on ``x`` that writes ``message`` and the values of ``data`` (default ``[x]``)
    to ``stream`` (stderr) every time it runs."""
    data = [x] if data is None else list(data)
    return Print((x, *data), message, summarize, stream, name)
