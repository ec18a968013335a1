"""Ops: one class per primitive with its forward and backward, and a snake_case wrapper."""

from engine.ops.activations import (exp, leaky_relu, log, log_softmax, relu, sigmoid, softmax,
                                    tanh)
from engine.ops.arithmetic import add, div, matmul, mul, neg, pow, sub
from engine.ops.debug import print_
from engine.ops.random import dropout
from engine.ops.reductions import reduce_mean, reduce_sum
from engine.ops.shape import concat, reshape, transpose

__all__ = ["add", "concat", "div", "dropout", "exp", "leaky_relu", "log", "log_softmax",
           "matmul", "mul", "neg", "pow", "print_", "reduce_mean", "reduce_sum", "relu",
           "reshape", "sigmoid", "softmax", "sub", "tanh", "transpose"]
