"""Compiled plans: what a Session runs for one set of fetches and fed placeholders.

A plan is compiled once: the topological order becomes a flat list of steps over a list of
value slots, each op gets a :class:`Context` whose buffers are reused between calls, the
backward passes are prepared, and the optimizers' updates are put last. Running a plan is
then a loop over steps that makes the numpy calls and little else.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from engine.autodiff import BackwardPass, Gradient
from engine.graph import (Constant, GraphError, Node, Op, Placeholder, Variable, dtype_name,
                          format_shape, resolve_names, topological_order)

ALIGNMENT = 64


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary.

    BLAS kernels may take different code paths (and round differently) for differently
    aligned data; aligning every buffer and variable keeps results independent of where
    the allocator happened to put them, which bit-exact resume relies on.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


class Context:
    """Per-op state inside one plan: reusable buffers, the forward output, run mode."""

    def __init__(self, plan: "Plan"):
        self._buffers: dict = {}
        self._active = self._buffers  # backward passes swap in their own buffers
        self.output: Any = None
        self.needs_grad: tuple = ()
        self.training: bool = plan.training
        self.rng: np.random.Generator = plan.rng
        self.float_dtype: np.dtype = plan.float_dtype

    def buffer(self, key, shape, dtype) -> np.ndarray:
        """An array of ``shape`` and ``dtype`` kept for ``key`` and reused on later calls."""
        buf = self._active.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._active[key] = aligned_empty(shape, dtype)
        return buf

    def promote(self, *arrays) -> np.dtype:
        """The result dtype of mixing ``arrays``: any float makes the session's float."""
        if any(a.dtype.kind == "f" for a in arrays):
            return self.float_dtype
        return np.result_type(*arrays)


def flatten_fetches(fetches) -> tuple[list[Node], Any]:
    """The nodes in ``fetches`` (a node, list, tuple or dict) and how to rebuild the shape."""
    if isinstance(fetches, Node):
        return [fetches], None
    if isinstance(fetches, dict):
        keys = list(fetches)
        nodes = [fetches[k] for k in keys]
        structure = ("dict", keys)
    elif isinstance(fetches, (list, tuple)):
        nodes = list(fetches)
        structure = (type(fetches).__name__, len(nodes))
    else:
        raise GraphError(f"cannot fetch {type(fetches).__name__} {fetches!r}: fetch a graph node, "
                         "or a list, tuple or dict of them")
    for i, n in enumerate(nodes):
        if not isinstance(n, Node):
            where = f"key {keys[i]!r}" if structure[0] == "dict" else f"item {i}"
            raise GraphError(f"cannot fetch {where}: {type(n).__name__} {n!r} is not a graph node")
    return nodes, structure


def rebuild(structure, values):
    if structure is None:
        return values[0]
    kind, info = structure
    if kind == "dict":
        return dict(zip(info, values))
    return tuple(values) if kind == "tuple" else list(values)


class Plan:
    """The compiled program for one (fetches, fed placeholders, training) combination."""

    def __init__(self, session, fetch_nodes: Sequence[Node], fed: frozenset, training):
        self.session = session
        self.rng = session.rng
        self.float_dtype = session.float_dtype
        order = topological_order(list(fetch_nodes))
        self.names = resolve_names(order)
        has_updates = any(getattr(n, "is_update", False) for n in order)
        self.training = has_updates if training is None else bool(training)
        slot = {node: i for i, node in enumerate(order)}
        self.order, self.slot = order, slot
        vals: list = [None] * len(order)
        self.vals = vals
        self.feeds: list[tuple[Placeholder, int, np.dtype]] = []
        self.feed_buffers: dict[int, np.ndarray] = {}
        contexts: dict[Node, Context] = {}
        variables: dict[str, Variable] = {}
        for node in order:
            if isinstance(node, Placeholder):
                if node not in fed:
                    raise GraphError(f"must feed a value for placeholder '{self.names[node]}' "
                                     f"(shape {format_shape(node.shape)}, {node.dtype.name})")
                dtype = self.float_dtype if node.dtype.kind == "f" else node.dtype
                self.feeds.append((node, slot[node], dtype))
            elif isinstance(node, Variable):
                variables[self.names[node]] = node
            elif isinstance(node, Constant):
                dtype = self.float_dtype if node.dtype.kind == "f" else node.dtype
                vals[slot[node]] = np.asarray(node.value, dtype=dtype)
            elif isinstance(node, Op):
                contexts[node] = Context(self)
        for name, array in session._bind(variables).items():
            vals[slot[variables[name]]] = array
        self.contexts = contexts

        # Gradient nodes: one backward pass per loss, run where the first one is needed.
        targets_by_loss: dict[Node, list[Node]] = {}
        for node in order:
            if isinstance(node, Gradient):
                targets_by_loss.setdefault(node.loss, [])
                if node.wrt not in targets_by_loss[node.loss]:
                    targets_by_loss[node.loss].append(node.wrt)
        passes: dict[Node, BackwardPass] = {}
        self.grad_results: dict[Node, dict] = {}
        steps: list = []
        updates: list = []
        for node in order:
            if isinstance(node, Gradient):
                if node.loss not in passes:
                    passes[node.loss] = BackwardPass(node.loss, targets_by_loss[node.loss],
                                                     slot, contexts)
                    steps.append(self._backward_step(passes[node.loss], targets_by_loss))
                steps.append(self._gradient_step(node))
            elif getattr(node, "is_update", False):
                updates.append((node, contexts[node], tuple(slot[i] for i in node.inputs)))
            elif isinstance(node, Op):
                steps.append(self._forward_step(node, contexts[node]))
        self.steps = steps
        self.updates = updates
        self.fetch_slots = [slot[n] for n in fetch_nodes]
        self.fetch_is_update = [getattr(n, "is_update", False) for n in fetch_nodes]

    # -- step builders: closures over the value list, specialised by arity for speed
    def _forward_step(self, node: Op, ctx: Context):
        vals, out = self.vals, self.slot[node]
        ins = [self.slot[i] for i in node.inputs]
        fwd = node.forward
        if len(ins) == 1:
            (i0,) = ins

            def step():
                ctx.output = vals[out] = fwd(ctx, vals[i0])
        elif len(ins) == 2:
            i0, i1 = ins

            def step():
                ctx.output = vals[out] = fwd(ctx, vals[i0], vals[i1])
        else:
            def step():
                ctx.output = vals[out] = fwd(ctx, *[vals[i] for i in ins])
        return step

    def _backward_step(self, backward: BackwardPass, targets_by_loss):
        vals, results = self.vals, self.grad_results
        loss = backward.loss

        def step():
            results[loss] = backward.run(vals)
        return step

    def _gradient_step(self, node: Gradient):
        vals, results, out = self.vals, self.grad_results, self.slot[node]
        loss, wrt = node.loss, node.wrt

        def step():
            vals[out] = results[loss][wrt]
        return step

    def run(self, feed: dict) -> list:
        vals = self.vals
        for node, s, dtype in self.feeds:
            value = check_feed(node, feed[node], dtype, self.names[node])
            if value.ctypes.data % ALIGNMENT:
                value = self._aligned_copy(s, value)
            vals[s] = value
        for step in self.steps:
            step()
        # Fetched values are copied before the updates, so they show what this step used.
        out = [None if is_update else _copy(vals[s])
               for s, is_update in zip(self.fetch_slots, self.fetch_is_update)]
        for node, ctx, slots in self.updates:
            node.apply(ctx, *[vals[s] for s in slots])
        return out


    def _aligned_copy(self, s: int, value: np.ndarray) -> np.ndarray:
        """Copy a fed array to an aligned buffer (see ``aligned_empty``)."""
        buf = self.feed_buffers.get(s)
        if buf is None or buf.shape != value.shape:
            buf = self.feed_buffers[s] = aligned_empty(value.shape, value.dtype)
        np.copyto(buf, value)
        return buf


def _copy(value):
    if isinstance(value, np.ndarray):
        return value[()] if value.ndim == 0 else value.copy()
    return value


def check_feed(node: Placeholder, value, dtype: np.dtype, name: str) -> np.ndarray:
    """The fed value as an array of ``dtype``, or a clear error naming the placeholder."""
    if type(value) is not np.ndarray or value.dtype != dtype:
        try:
            given = np.asarray(value)
        except (TypeError, ValueError) as e:  # ragged nested lists
            raise GraphError(f"placeholder '{name}' expects {dtype_name(dtype)} of shape "
                             f"{format_shape(node.shape)}, was fed a value that is no array: "
                             f"{e}") from None
        if given.dtype.kind not in "fiub" or not np.can_cast(given.dtype, dtype, "same_kind"):
            raise GraphError(f"placeholder '{name}' expects {dtype_name(dtype)} of shape "
                             f"{format_shape(node.shape)}, was fed {given.dtype.name} of shape "
                             f"{format_shape(given.shape)}")
        value = np.ascontiguousarray(given, dtype=dtype)
    shape = node.shape
    if shape is not None:
        vs = value.shape
        if len(vs) != len(shape) or any(d is not None and d != v for d, v in zip(shape, vs)):
            raise GraphError(f"placeholder '{name}' expects shape {format_shape(shape)}, was "
                             f"fed shape {format_shape(vs)}")
    return value
