"""Layers: functions that create named variables and the ops that use them."""

from __future__ import annotations

from typing import Sequence

from engine import initializers
from engine.graph import GraphError, Node, Variable
from engine.ops import activations
from engine.ops.arithmetic import add, matmul

ACTIVATIONS = {
    None: None,
    "linear": None,
    "relu": activations.relu,
    "sigmoid": activations.sigmoid,
    "tanh": activations.tanh,
    "leaky_relu": activations.leaky_relu,
}

OP_NAMES = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "leaky_relu": "LeakyRelu"}

# He init keeps ReLU activations' variance; Glorot suits sigmoid, tanh and linear layers.
DEFAULT_INIT = {"relu": "he_normal", "leaky_relu": "he_normal"}


def dense(x: Node, units: int, activation: str | None = None, name: str = "dense",
          kernel_initializer=None, bias_initializer="zeros", use_bias: bool = True) -> Node:
    """``activation(x @ kernel + bias)``: ``x (batch, in)`` to ``(batch, units)``.

    Creates the variables ``name/kernel (in, units)`` and ``name/bias (units,)``; the
    kernel is initialised Glorot-uniform, or He-normal for ReLU.
    """
    if activation not in ACTIVATIONS:
        raise GraphError(f"dense '{name}': unknown activation {activation!r}; known: "
                         f"{', '.join(repr(a) for a in ACTIVATIONS)}")
    if not isinstance(units, int) or isinstance(units, bool) or units < 1:
        raise GraphError(f"dense '{name}': units must be a positive integer, got {units!r}")
    if not isinstance(x, Node) or x.shape is None or len(x.shape) != 2 or x.shape[1] is None:
        shape = getattr(x, "shape", None)
        raise GraphError(f"dense '{name}': input must be (batch, features) with known features, "
                         f"got shape {shape}")
    fan_in = x.shape[1]
    init = kernel_initializer or DEFAULT_INIT.get(activation, "glorot_uniform")
    kernel = Variable(initializers.get(init), name=f"{name}/kernel", shape=(fan_in, units))
    out = matmul(x, kernel, name=f"{name}/MatMul")
    if use_bias:
        bias = Variable(initializers.get(bias_initializer), name=f"{name}/bias", shape=(units,))
        out = add(out, bias, name=f"{name}/BiasAdd")
    fn = ACTIVATIONS[activation]
    if fn is not None:
        out = fn(out, name=f"{name}/{OP_NAMES[activation]}")
    return out


def mlp(x: Node, sizes: Sequence[int], activation: str | None = "relu",
        output_activation: str | None = None, name: str = "mlp") -> Node:
    """A stack of dense layers ``name/layer_0 ... name/layer_{k-1}``; the last one uses
    ``output_activation`` (none by default: logits)."""
    sizes = list(sizes)
    if not sizes:
        raise GraphError(f"mlp '{name}': needs at least one layer size")
    out = x
    for i, units in enumerate(sizes):
        last = i == len(sizes) - 1
        out = dense(out, units, activation=output_activation if last else activation,
                    name=f"{name}/layer_{i}")
    return out
