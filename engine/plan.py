"""Compiled plans: what a Session runs for one set of fetches and fed placeholders.

A plan is compiled once: the topological order becomes a flat list of steps over a list of
value slots, each op gets a :class:`Context` whose buffers are reused between calls, the
backward passes are prepared, and the optimizers' updates are put last. Running a plan is
then a loop over steps that makes the numpy calls and little else.

A forward-only plan (no gradient, no update: evaluation) shares one :class:`BufferPool`
among its ops instead: an op's buffers go back to the pool as soon as no later step reads
its value, so evaluating a deep network on many rows keeps two activations, not all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from engine.autodiff import BackwardPass, Gradient
from engine.graph import (Constant, GraphError, Node, Op, Placeholder, Variable, dtype_name,
                          format_shape, ordered_names)

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


def _owner(array: np.ndarray) -> np.ndarray:
    """The array that owns ``array``'s memory (numpy points every view at the owner)."""
    return array if array.base is None else array.base


def side_by_side(shapes: Sequence[tuple], dtype) -> tuple[list[int], int]:
    """Where arrays of ``shapes`` go when stored one after another in one block, each on
    a 64-byte boundary: their offsets and the block's length, in elements of ``dtype``."""
    unit = max(ALIGNMENT // np.dtype(dtype).itemsize, 1)
    offsets, end = [], 0
    for shape in shapes:
        offsets.append(end)
        end += -(-math.prod(shape) // unit) * unit
    return offsets, end


def flat_view(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """A 1-D array over all of ``arrays`` when they lie in one block as ``side_by_side``
    places them (the gaps included), else None."""
    if not arrays:
        return None
    first = arrays[0]
    owner, dtype = _owner(first), first.dtype
    if owner.ndim != 1 or owner.dtype != np.uint8 or any(
            a.dtype != dtype or _owner(a) is not owner or not a.flags.c_contiguous
            for a in arrays):
        return None
    offsets, length = side_by_side([a.shape for a in arrays], dtype)
    base = owner.ctypes.data
    start = first.ctypes.data - base
    if any(a.ctypes.data - base != start + off * dtype.itemsize
           for a, off in zip(arrays, offsets)) or start + length * dtype.itemsize > owner.nbytes:
        return None
    return owner[start:start + length * dtype.itemsize].view(dtype)


def update_groups(order: Sequence[Node]) -> list[list[Variable]]:
    """The variables each elementwise optimizer in ``order`` updates, in groups to store
    side by side: the parameters, then one group per kind of slot (in the parameters'
    order). A train op's inputs are (gradients, parameters, slots per parameter, step)."""
    groups = []
    for node in order:
        if getattr(node, "is_update", False) and getattr(getattr(node, "optimizer", None),
                                                          "elementwise", False):
            n, k = node.n, node.slot_count
            slots = node.inputs[2 * n:2 * n + n * k]
            groups.append(list(node.inputs[n:2 * n]))
            groups.extend(list(slots[j::k]) for j in range(k))
    return groups


class BufferPool:
    """Aligned memory shared by the ops of a forward-only plan.

    ``take`` hands out the smallest free block that is large enough (a new one if none is),
    ``give`` takes a block back. A run asks for the same sizes in the same order every
    time, so from the second run on nothing new is allocated.
    """

    def __init__(self):
        self._free: list[np.ndarray] = []  # aligned uint8 blocks

    def take(self, shape: tuple, dtype) -> tuple[np.ndarray, np.ndarray]:
        """A free block and an array of ``shape`` and ``dtype`` at its start."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        best = -1
        for i, block in enumerate(self._free):
            if block.nbytes >= nbytes and (best < 0 or block.nbytes < self._free[best].nbytes):
                best = i
        block = self._free.pop(best) if best >= 0 else aligned_empty((nbytes,), np.uint8)
        return block, block[:nbytes].view(dtype).reshape(shape)

    def give(self, block: np.ndarray) -> None:
        self._free.append(block)


class Context:
    """Per-op state inside one plan: reusable buffers, the forward output, run mode."""

    def __init__(self, plan: Plan, pool: BufferPool | None = None):
        self._buffers: dict = {}
        self._active = self._buffers  # backward passes swap in their own buffers
        self._pool = pool
        self._blocks: list[np.ndarray] = []  # what this op holds from the pool
        self.output: Any = None
        self.needs_grad: tuple = ()
        self.training: bool = plan.training
        self.rng: np.random.Generator = plan.rng
        self.float_dtype: np.dtype = plan.float_dtype

    def buffer(self, key, shape, dtype) -> np.ndarray:
        """An array of ``shape`` and ``dtype`` kept for ``key`` and reused on later calls.

        Its contents do not survive from one run to the next: in forward-only plans other
        ops reuse the memory once this op's value is no longer needed.
        """
        buf = self._active.get(key)
        if buf is not None and buf.shape == shape and buf.dtype == dtype:
            return buf
        if self._pool is None:
            buf = aligned_empty(shape, dtype)
        else:
            block, buf = self._pool.take(tuple(shape), dtype)
            self._blocks.append(block)
        self._active[key] = buf
        return buf

    def promote(self, *arrays) -> np.dtype:
        """The result dtype of mixing ``arrays``: any float makes the session's float."""
        if any(a.dtype.kind == "f" for a in arrays):
            return self.float_dtype
        return np.result_type(*arrays)

    def owns(self, value) -> bool:
        """Whether ``value`` lives in this op's pooled buffers (rather than being a view of
        an input, as a reshape's output is)."""
        if not isinstance(value, np.ndarray):
            return True
        owner = _owner(value)
        return any(owner is _owner(block) for block in self._blocks)

    def release(self) -> None:
        """Give this op's buffers back to the pool."""
        for block in self._blocks:
            self._pool.give(block)
        self._blocks.clear()
        self._buffers.clear()


class Lifetimes:
    """When each value of a forward-only plan can give its buffers back.

    A value is done when every step reading it has run (fetched values at the end of the
    run). An op whose output is not its own buffer (a reshape, an identity) may be a view of
    its inputs: it keeps them alive until it is done itself.
    """

    def __init__(self, contexts: dict[int, Context], inputs: dict[int, tuple[int, ...]],
                 fetched: Sequence[int]):
        self.contexts, self.inputs = contexts, inputs
        self.readers = dict.fromkeys(contexts, 0)
        for ins in inputs.values():
            for s in ins:
                self.readers[s] += 1
        for s in fetched:
            if s in self.readers:
                self.readers[s] += 1
        self.remaining: dict[int, int] = {}
        self.held: dict[int, tuple[int, ...]] = {}

    def start(self) -> None:
        self.remaining = dict(self.readers)
        self.held.clear()

    def after(self, slot: int) -> None:
        """The op at ``slot`` has run: its inputs have one reader fewer."""
        ctx = self.contexts[slot]
        if ctx.owns(ctx.output):
            for s in self.inputs[slot]:
                self._done(s)
        else:
            self.held[slot] = self.inputs[slot]

    def _done(self, slot: int) -> None:
        self.remaining[slot] -= 1
        if self.remaining[slot] == 0:
            self.contexts[slot].release()
            for s in self.held.pop(slot, ()):
                self._done(s)

    def finish(self) -> None:
        """The run is over (fetches copied): every buffer goes back to the pool."""
        for ctx in self.contexts.values():
            ctx.release()


def flatten_fetches(fetches) -> tuple[tuple[Node, ...], Any]:
    """The nodes in ``fetches`` (a node, list, tuple or dict) and how to rebuild the shape."""
    if isinstance(fetches, Node):
        return (fetches,), None
    if isinstance(fetches, dict):
        keys = list(fetches)
        nodes = tuple(fetches[k] for k in keys)
        structure = ("dict", keys)
    elif isinstance(fetches, (list, tuple)):
        nodes = tuple(fetches)
        structure = (type(fetches).__name__, len(nodes))
    else:
        raise GraphError(f"cannot fetch {type(fetches).__name__} {fetches!r}: fetch a graph node, "
                         "or a list, tuple or dict of them")
    for i, n in enumerate(nodes):
        if not isinstance(n, Node):
            where = f"key {keys[i]!r}" if structure[0] == "dict" else f"item {i}"
            raise GraphError(f"cannot fetch {where}: {type(n).__name__} {n!r} is not a graph node")
    return nodes, structure


def rebuild(structure, values: list):
    if structure is None:
        return values[0]
    kind, info = structure
    if kind == "dict":
        return dict(zip(info, values))
    return tuple(values) if kind == "tuple" else values


class Plan:
    """The compiled program for one (fetches, fed placeholders, training) combination.

    ``rng`` and ``float_dtype`` are the session's generator and float dtype; ``bind`` is
    the session's ``(variables by name, update groups of names) -> arrays by name``, which
    gives the arrays holding the plan's variables (see ``Session._bind``).
    """

    def __init__(self, fetch_nodes: Sequence[Node], fed: frozenset, training, *,
                 rng: np.random.Generator, float_dtype: np.dtype,
                 bind: Callable[[dict[str, Variable], list[list[str]]], dict[str, np.ndarray]]):
        self.rng = rng
        self.float_dtype = float_dtype
        order, self.names = ordered_names(list(fetch_nodes))
        has_updates = any(getattr(n, "is_update", False) for n in order)
        self.training = has_updates if training is None else bool(training)
        forward_only = not has_updates and not any(isinstance(n, Gradient) for n in order)
        self.pool = BufferPool() if forward_only else None
        slot = {node: i for i, node in enumerate(order)}
        self.order, self.slot = order, slot
        vals: list = [None] * len(order)
        self.vals = vals
        contexts: dict[Node, Context] = {}
        variables: dict[str, Variable] = {}
        loaders = []
        for node in order:
            if isinstance(node, Placeholder):
                if node not in fed:
                    raise GraphError(f"must feed a value for placeholder '{self.names[node]}' "
                                     f"(shape {format_shape(node.shape)}, {node.dtype.name})")
                dtype = self.float_dtype if node.dtype.kind == "f" else node.dtype
                contexts[node] = Context(self, self.pool)  # holds the aligned copy if needed
                loaders.append(self._feed_loader(node, contexts[node], dtype))
            elif isinstance(node, Variable):
                variables[self.names[node]] = node
            elif isinstance(node, Constant):
                dtype = self.float_dtype if node.dtype.kind == "f" else node.dtype
                value = np.asarray(node.value, dtype=dtype)
                vals[slot[node]] = aligned_empty(value.shape, dtype)
                vals[slot[node]][...] = value
            elif isinstance(node, Op):
                contexts[node] = Context(self, self.pool)
        groups = [[self.names[v] for v in group] for group in update_groups(order)]
        for name, array in bind(variables, groups).items():
            vals[slot[variables[name]]] = array
        self.contexts = contexts
        self.loaders = loaders

        # Gradient nodes: one backward pass per loss, run where the first one is needed; it
        # writes the values of every gradient node of its loss.
        targets_by_loss: dict[Node, dict[Node, list[int]]] = {}
        for node in order:
            if isinstance(node, Gradient):
                targets_by_loss.setdefault(node.loss, {}).setdefault(node.wrt, []).append(
                    slot[node])
        steps: list[Callable[[], None]] = []
        step_slots: list[int] = []
        self.backward_passes: list[BackwardPass] = []
        self._gradient_blocks: list[np.ndarray] = []
        updates: list[Callable[[], None]] = []
        for node in order:
            if isinstance(node, Gradient):
                if node.loss in targets_by_loss:
                    backward = BackwardPass(node.loss, targets_by_loss.pop(node.loss), slot,
                                            contexts, vals, Context(self))
                    self.backward_passes.append(backward)
                    steps.append(backward.run)
                    step_slots.append(slot[node])
            elif getattr(node, "is_update", False):
                updates.append(self._update(node, contexts[node]))
            elif isinstance(node, Op):
                steps.append(self._forward_step(node, contexts[node]))
                step_slots.append(slot[node])
        self.steps, self.step_slots, self.updates = steps, step_slots, updates
        self.fetch_slots = [None if getattr(n, "is_update", False) else slot[n]
                            for n in fetch_nodes]
        self.lifetimes = None
        if forward_only:
            by_slot = {slot[n]: ctx for n, ctx in contexts.items()}
            inputs = {slot[n]: tuple(dict.fromkeys(slot[i] for i in n.inputs
                                                   if slot[i] in by_slot))
                      for n in order if isinstance(n, Op)}
            self.lifetimes = Lifetimes(by_slot, inputs, [s for s in self.fetch_slots
                                                         if s is not None])

    # -- step builders: closures over the value list, specialised by arity for speed
    def _forward_step(self, node: Op, ctx: Context) -> Callable[[], None]:
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
            get = _getter(ins)

            def step():
                ctx.output = vals[out] = fwd(ctx, *get(vals))
        return step

    def _update(self, node: Op, ctx: Context) -> Callable[[], None]:
        vals, apply = self.vals, node.apply
        grouped = self._grouped_update(node, ctx)
        if grouped is not None:
            return grouped
        get = _getter([self.slot[i] for i in node.inputs])

        def update():
            apply(ctx, *get(vals))
        return update

    def _grouped_update(self, node: Op, ctx: Context) -> Callable[[], None] | None:
        """One update call for all parameters, when an elementwise optimizer's parameters
        and slots lie side by side (the session stores them so): the gradients are put side
        by side in a block of the same layout, and the update runs on the three blocks as
        if they were one parameter. Otherwise None."""
        if not getattr(getattr(node, "optimizer", None), "elementwise", False):
            return None
        vals, slot, apply = self.vals, self.slot, node.apply
        n, k = node.n, node.slot_count
        inputs = node.inputs
        params = flat_view([vals[slot[p]] for p in inputs[n:2 * n]])
        slots = inputs[2 * n:2 * n + n * k]
        slot_blocks = [flat_view([vals[slot[s]] for s in slots[j::k]]) for j in range(k)]
        if params is None or any(b is None for b in slot_blocks):
            return None
        shapes = [p.shape for p in inputs[n:2 * n]]
        offsets, length = side_by_side(shapes, params.dtype)
        grads = aligned_empty((length,), params.dtype)
        grads.fill(0)  # the gaps stay zero: updating them changes nothing
        self._gradient_blocks.append(_owner(grads))
        views = [grads[o:o + math.prod(shape)].reshape(shape)
                 for o, shape in zip(offsets, shapes)]
        grad_slots = [slot[g] for g in inputs[:n]]
        step_slot = slot[inputs[-1]]
        adopted = [False] * n

        def update():
            for i, (s, view) in enumerate(zip(grad_slots, views)):
                g = vals[s]
                if g is not view:
                    np.copyto(view, g)
                    if not adopted[i] and not any(_owner(g) is b for b in self._gradient_blocks):
                        # Have the op that made this gradient write it into the block from
                        # the next run on: no copy then.
                        adopted[i] = True
                        for backward in self.backward_passes:
                            if backward.adopt(g, view):
                                break
            apply(ctx, grads, params, *slot_blocks, vals[step_slot])
        return update

    def _feed_loader(self, node: Placeholder, ctx: Context, dtype: np.dtype):
        """A function that puts the fed value of ``node`` into its slot: checked, and copied
        into an aligned buffer of the session's dtype.

        Always copying keeps results independent of where (and with which strides) the
        caller's array lives (see ``aligned_empty``); it costs about what finding out
        whether a copy is needed does, and large arrays are rarely 64-byte aligned anyway.
        """
        vals, s, name = self.vals, self.slot[node], self.names[node]
        accepted = [None]  # the last shape that passed the checks: checked once, not per step

        def load(feed: dict) -> None:
            value = feed[node]
            if type(value) is not np.ndarray or value.dtype != dtype \
                    or value.shape != accepted[0]:
                value = check_feed(node, value, dtype, name)
                accepted[0] = value.shape
            copy = ctx.buffer("feed", value.shape, dtype)
            np.copyto(copy, value, casting="same_kind")
            vals[s] = copy
        return load

    def run(self, feed: dict) -> list:
        vals = self.vals
        for load in self.loaders:
            load(feed)
        lifetimes = self.lifetimes
        try:
            if lifetimes is None:
                for step in self.steps:
                    step()
            else:
                lifetimes.start()
                after = lifetimes.after
                for step, s in zip(self.steps, self.step_slots):
                    step()
                    after(s)
            # Fetched values are copied before the updates, so they show what this step used.
            out = [None if s is None else _copy(vals[s]) for s in self.fetch_slots]
        finally:
            if lifetimes is not None:
                lifetimes.finish()
        for update in self.updates:
            update()
        return out


def _getter(slots: Sequence[int]) -> Callable[[list], tuple]:
    """``vals -> tuple(vals[s] for s in slots)``, in C."""
    if len(slots) == 1:
        (s,) = slots
        return lambda vals: (vals[s],)
    if not slots:
        return lambda vals: ()
    return itemgetter(*slots)


def _copy(value):
    if isinstance(value, np.ndarray):
        return value[()] if value.ndim == 0 else value.copy()
    return value


def check_feed(node: Placeholder, value, dtype: np.dtype, name: str) -> np.ndarray:
    """The fed value as an array that casts to ``dtype``, or a clear error naming the
    placeholder."""
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
        value = given  # converted while copied into the plan's buffer
    shape = node.shape
    if shape is not None:
        vs = value.shape
        if len(vs) != len(shape) or any(d is not None and d != v for d, v in zip(shape, vs)):
            raise GraphError(f"placeholder '{name}' expects shape {format_shape(shape)}, was "
                             f"fed shape {format_shape(vs)}")
    return value
