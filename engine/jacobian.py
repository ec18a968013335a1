"""The full Jacobian of a node, by reverse mode one row at a time.

The lectures' chain rule for vector functions: for ``h = f(g(x))``, ``J^h = J^f · J^g``.
Reverse mode gives one row of a Jacobian per backward pass: the gradient of ``<y, e_i>``
with respect to ``x`` is ``e_iᵀ J``, the row of ``y_i``.
"""

from __future__ import annotations

import numpy as np

from engine.autodiff import Gradient
from engine.graph import GraphError, Node, placeholder
from engine.ops.arithmetic import mul
from engine.ops.reductions import reduce_sum
from engine.session import Session


def jacobian(y: Node, x: Node, feed: dict | None = None, session: Session | None = None,
             seed: int = 0) -> np.ndarray:
    """The Jacobian of ``y`` with respect to ``x`` where ``feed`` puts the graph.

    Returns an array of shape ``y.shape + x.shape``, the shapes the two have when run
    (as ``tf.GradientTape.jacobian``): ``J[i..., j...] = ∂y[i...] / ∂x[j...]``. For
    vectors, ``y (m,)`` and ``x (n,)``, it is the ``(m, n)`` matrix of the lectures, a row
    per output; ``J.reshape(y.size, x.size)`` is that matrix for any shapes. For a dense
    layer ``h = x @ kernel + bias``, ``x (batch, in)``, the block ``J[i, :, i, :]`` is
    ``kernelᵀ (units, in)`` and the blocks between two different examples are zero.

    ``x`` is a variable, a placeholder (which must be fed) or any floating node of ``y``'s
    graph; a ``y`` that does not depend on ``x`` has a Jacobian of zeros. ``feed`` is as in
    ``Session.run``. The graph runs in inference mode (dropout off) in ``session``, whose
    variable values are used; without one, in a new float64 session from ``seed`` (as
    ``check_gradients``). The result has the session's float dtype.

    One reverse pass per element of ``y``: the plan is compiled once, then each row costs
    one forward and one backward run. Reverse mode suits an ``x`` larger than ``y``.
    """
    if not isinstance(y, Node) or not isinstance(x, Node):
        raise GraphError("jacobian() takes graph nodes: y and the node to differentiate it "
                         "with respect to")
    if y.dtype.kind != "f":
        raise GraphError(f"jacobian of {y.describe()}: not floating point")
    if session is None:
        session = Session(seed=seed, dtype=np.float64)
    feed = dict(feed or {})
    # The row of y_i is the gradient of sum(y * e_i): one graph, fed a new e_i per row.
    direction = placeholder(y.shape, name="jacobian/direction")
    row = Gradient(reduce_sum(mul(y, direction)), x, name=f"jacobian/{x.name}")
    y_value, x_value = (np.asarray(v) for v in session.run([y, x], feed, training=False))
    rows = np.empty((y_value.size, x_value.size), dtype=session.float_dtype)
    feed[direction] = e = np.zeros(y_value.shape, dtype=session.float_dtype)
    flat = e.reshape(-1)
    for i in range(y_value.size):
        flat[i] = 1
        rows[i] = session.run(row, feed, training=False).reshape(-1)
        flat[i] = 0
    return rows.reshape(y_value.shape + x_value.shape)
