"""Reverse-mode differentiation.

:func:`gradients` returns :class:`Gradient` nodes, like ``tf.gradients``. When a plan
needs one, it runs one backward pass per loss (:class:`BackwardPass`): the nodes between the
wanted inputs and the loss, in reverse topological order, each op's ``backward`` called once
with the sum of the gradients of all its consumers.
"""

from __future__ import annotations

from collections.abc import Sequence

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

    ``targets`` maps each node to differentiate with respect to to the plan slots of its
    gradient nodes; ``slot`` maps nodes to their index in the plan's value list ``vals``,
    ``contexts`` nodes to their op contexts. Each op gets its own buffers for this pass (two
    losses in one run never overwrite each other's gradients); ``ctx`` holds the pass's own
    (the seed, sums of several consumers' gradients, zeros).

    Compiling decides, per op, which inputs need a gradient and which inputs receive
    gradients from several consumers (those are summed in a buffer; the others are passed
    on as they are), so running the pass is one closure call per op.
    """

    def __init__(self, loss: Node, targets: dict[Node, list[int]], slot: dict,
                 contexts: dict, vals: list, ctx):
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
        index = {node: k for k, node in enumerate(order)}
        ops = []
        consumers = [0] * len(order)  # how many gradients flow into each node
        for node in reversed(order):
            if not reach[node] or not isinstance(node, Op):
                continue
            if not node.differentiable:
                raise GraphError(f"the loss '{loss.name}' depends on the inputs to "
                                 f"differentiate through {node.describe()}, which has no "
                                 "gradient")
            needs = tuple(reach[i] for i in node.inputs)
            if any(needs):
                ops.append((node, needs))
                for i, need in zip(node.inputs, needs):
                    consumers[index[i]] += need
        self._vals, self._ctx = vals, ctx
        self._grads: list = [None] * len(order)  # grads[k]: the gradient of order[k]
        self._no_grads: list = [None] * len(order)
        self._loss_slot = slot[loss]
        self._seed = None
        self._op_buffers: list[dict] = []  # each op's buffers for this pass
        self._steps = [self._step(node, contexts[node], needs, index[node],
                                  [slot[i] for i in node.inputs],
                                  [index[i] for i in node.inputs], consumers)
                       for node, needs in ops]
        self._results = [(index.get(t), slot[t], grad_slots) for t, grad_slots in targets.items()]

    def _step(self, node: Op, ctx, needs: tuple, k: int, in_slots: list, in_index: list,
              consumers: list):
        """The closure that runs ``node``'s backward and hands its gradients on."""
        grads, vals, add = self._grads, self._vals, self._add
        backward = node.backward
        buffers: dict = {}
        self._op_buffers.append(buffers)
        # Per input: (index, True when gradients from several consumers must be summed).
        routes = [(j, consumers[j] > 1) for j in in_index]

        def call(grad_output, inputs):
            ctx.needs_grad = needs
            forward_buffers, ctx._active = ctx._active, buffers
            try:
                return backward(ctx, grad_output, *inputs)
            finally:
                ctx._active = forward_buffers

        def route(input_grads):
            for (j, summed), g in zip(routes, input_grads):
                if g is not None:
                    prev = grads[j]
                    grads[j] = g if prev is None or not summed else add(j, prev, g)

        if len(in_slots) == 2:  # the common case, spelled out: this runs for every op
            (i0, i1), ((j0, sum0), (j1, sum1)) = in_slots, routes

            def step():
                grad_output = grads[k]
                if grad_output is None:
                    return
                ctx.needs_grad = needs
                forward_buffers, ctx._active = ctx._active, buffers
                try:
                    g0, g1 = backward(ctx, grad_output, vals[i0], vals[i1])
                finally:
                    ctx._active = forward_buffers
                if g0 is not None:
                    prev = grads[j0]
                    grads[j0] = g0 if prev is None or not sum0 else add(j0, prev, g0)
                if g1 is not None:
                    prev = grads[j1]
                    grads[j1] = g1 if prev is None or not sum1 else add(j1, prev, g1)
        else:
            def step():
                grad_output = grads[k]
                if grad_output is not None:
                    route(call(grad_output, [vals[s] for s in in_slots]))
        return step

    def adopt(self, array: np.ndarray, replacement: np.ndarray) -> bool:
        """Make the buffer ``array`` (an op's, or this pass's) be ``replacement`` from the
        next run on, so that what was written into ``array`` lands in ``replacement``
        (same shape and dtype). False when ``array`` is no buffer of this pass."""
        if array.shape != replacement.shape or array.dtype != replacement.dtype:
            return False
        for buffers in (*self._op_buffers, self._ctx._buffers):
            for key, buf in buffers.items():
                if buf is array:
                    buffers[key] = replacement
                    if array is self._seed:
                        self._seed = None
                    return True
        return False

    def _add(self, j: int, prev: np.ndarray, g: np.ndarray) -> np.ndarray:
        """``prev + g`` in this pass's buffer for node ``j``."""
        return np.add(prev, g, out=self._ctx.buffer(("sum", j), g.shape, g.dtype))

    def run(self) -> None:
        """Compute the gradients and store them in the slots of the gradient nodes (arrays
        reused between runs)."""
        vals, grads = self._vals, self._grads
        grads[:] = self._no_grads
        loss_value = vals[self._loss_slot]
        seed = self._ctx.buffer("seed", loss_value.shape, loss_value.dtype)
        if seed is not self._seed:
            seed.fill(1)
            self._seed = seed
        grads[-1] = seed  # the loss is last in its own topological order
        for step in self._steps:
            step()
        for k, target_slot, grad_slots in self._results:
            g = grads[k] if k is not None else None
            if g is None:  # the loss does not depend on this target
                value = vals[target_slot]
                g = self._ctx.buffer(("zeros", target_slot), value.shape, loss_value.dtype)
                g.fill(0)
            for s in grad_slots:
                vals[s] = g
