"""Reverse-mode differentiation.

:func:`gradients` returns :class:`Gradient` nodes, like ``tf.gradients``. When a plan
needs one, it runs one backward pass per loss (:class:`BackwardPass`): the nodes between the
wanted inputs and the loss, in reverse topological order, each op's ``backward`` called once
with the sum of the gradients of all its consumers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engine.graph import GraphError, Node, Op, topological_order


class Gradient(Node):
    """The gradient of the scalar ``loss`` with respect to ``wrt`` (same shape as ``wrt``).

    A non-scalar loss is summed first. A ``wrt`` the loss does not depend on gets zeros.
    """

    type_name = "Gradient"

    def __init__(self, loss: Node, wrt: Node, name: str | None = None):
        if not isinstance(loss, Node) or not isinstance(wrt, Node):
            raise GraphError("gradients() takes graph nodes: the loss and the nodes to "
                             "differentiate with respect to")
        if wrt.dtype.kind != "f":
            raise GraphError(f"cannot differentiate with respect to {wrt.describe()}: not "
                             "floating point")
        self.loss, self.wrt = loss, wrt
        self.inputs = (loss, wrt)
        super().__init__(wrt.shape, wrt.dtype,
                         name if name is not None else f"gradients/{wrt.name}")


def gradients(loss: Node, wrt: Sequence[Node] | Node) -> list[Gradient] | Gradient:
    """Gradient nodes of ``loss`` with respect to each of ``wrt`` (a node or a list)."""
    if isinstance(wrt, Node):
        return Gradient(loss, wrt)
    return [Gradient(loss, w) for w in wrt]


class BackwardPass:
    """One compiled backward sweep from ``loss`` to ``targets`` inside a plan.

    ``slot`` maps nodes to their index in the plan's value list. Each op gets its own
    buffers for this pass (two losses in one run never overwrite each other's gradients).
    """

    def __init__(self, loss: Node, targets: Sequence[Node], slot: dict, contexts: dict):
        self.loss = loss
        order = topological_order([loss])
        wanted = set(targets)
        reach: dict[Node, bool] = {}
        for node in order:
            reach[node] = node in wanted or (
                isinstance(node, (Op, Gradient)) and any(reach[i] for i in node.inputs))
            if reach[node] and isinstance(node, Gradient):
                raise GraphError(f"second-order gradients are not supported: the loss "
                                 f"'{loss.name}' depends on {node.describe()}")
        self.loss_slot = slot[loss]
        self.seed_buffer: np.ndarray | None = None
        index = {node: k for k, node in enumerate(order)}
        # grads[k]: the accumulated gradient of order[k] in this pass
        self.size = len(order)
        self.steps = []
        for node in reversed(order):
            if not reach[node] or not isinstance(node, Op):
                continue
            if not node.differentiable:
                raise GraphError(f"the loss '{loss.name}' depends on the inputs to "
                                 f"differentiate through {node.describe()}, which has no "
                                 "gradient")
            needs = tuple(reach[i] for i in node.inputs)
            if not any(needs):
                continue
            ctx = contexts[node]
            self.steps.append((node, ctx, {}, index[node], slot[node],
                               tuple(slot[i] for i in node.inputs),
                               tuple(index[i] for i in node.inputs), needs))
        self.targets = [(index.get(t), t, slot[t]) for t in targets]
        self.accumulators: dict[int, np.ndarray] = {}
        self.zeros: dict[Node, np.ndarray] = {}

    def run(self, vals: list) -> dict[Node, np.ndarray]:
        """Return the gradient of the loss for each target (arrays reused between runs)."""
        loss_value = vals[self.loss_slot]
        seed = self.seed_buffer
        if seed is None or seed.shape != loss_value.shape or seed.dtype != loss_value.dtype:
            seed = self.seed_buffer = np.ones_like(loss_value)
        grads: list = [None] * self.size
        grads[-1] = seed  # the loss is last in its own topological order
        acc = self.accumulators
        for node, ctx, buffers, k, out_slot, in_slots, in_index, needs in self.steps:
            grad_output = grads[k]
            if grad_output is None:
                continue
            ctx.needs_grad = needs
            saved, ctx._active = ctx._active, buffers
            try:
                input_grads = node.backward(ctx, grad_output, *[vals[s] for s in in_slots])
            finally:
                ctx._active = saved
            for j, g in zip(in_index, input_grads):
                if g is None:
                    continue
                prev = grads[j]
                if prev is None:
                    grads[j] = g
                else:
                    # Several consumers: sum their gradients in a buffer owned by this pass.
                    buf = acc.get(j)
                    if buf is None or buf.shape != g.shape or buf.dtype != g.dtype:
                        buf = acc[j] = np.empty(g.shape, g.dtype)
                    grads[j] = np.add(prev, g, out=buf)
        result = {}
        for k, target, target_slot in self.targets:
            g = grads[k] if k is not None else None
            if g is None:  # the loss does not depend on this target
                value = vals[target_slot]
                g = self.zeros.get(target)
                if g is None or g.shape != value.shape:
                    g = self.zeros[target] = np.zeros(value.shape, loss_value.dtype)
            result[target] = g
        return result
