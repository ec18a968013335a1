"""gradsweep's engine: a numpy computation graph with reverse-mode autodiff.

    import engine as en
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    h = en.layers.dense(x, 16, activation="relu", name="hidden")
    logits = en.layers.dense(h, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    train = en.optim.SGD(lr=0.1).minimize(loss)
    sess = en.Session(seed=0)
    _, l = sess.run([train, loss], feed={x: X, y: Y})

Imports numpy and the standard library only; importing it has no side effects.
"""

from engine import data, initializers, layers, losses, metrics, ops, optim, summary
from engine.autodiff import Gradient, gradients
from engine.gradcheck import check_gradients
from engine.graph import (Constant, GraphError, Node, Op, Placeholder, Variable, constant,
                          placeholder, topological_order, trainable_variables)
from engine.jacobian import jacobian
from engine.ops import (add, concat, div, dropout, exp, leaky_relu, log, log_softmax, matmul,
                        mul, neg, pow, print_, reduce_mean, reduce_sum, relu, reshape, sigmoid,
                        softmax, sub, tanh, transpose)
from engine.graph_def import graph_def
from engine.checkpoint import CheckpointError, latest_checkpoint
from engine.saver import Saver
from engine.session import Session

Print = print_

__all__ = [
    "Constant", "Gradient", "GraphError", "Node", "Op", "Placeholder", "Print", "Session",
    "Variable", "add", "check_gradients", "concat", "constant", "data", "div", "dropout", "exp",
    "gradients", "initializers", "jacobian", "layers", "leaky_relu", "log", "log_softmax",
    "losses", "matmul", "metrics", "mul", "neg", "ops", "optim", "placeholder", "pow", "print_",
    "reduce_mean", "reduce_sum", "relu", "reshape", "sigmoid", "softmax", "sub", "summary", "tanh",
    "topological_order", "trainable_variables", "transpose",
    "CheckpointError", "Saver", "graph_def", "latest_checkpoint",
]
