"""Graph nodes: placeholders, variables, constants and the base class of every op.

A graph is just the set of nodes reachable from what you run: there is no global default
graph and no process-wide name counter. Names of unnamed nodes are made unique *within a
graph* by :func:`resolve_names`, deterministically from the topological order, so building
the same model twice in one process gives the same names.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

Shape = tuple  # a static shape: a tuple of ints, with None for an unknown (batch) dimension

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def format_shape(shape: Shape | None) -> str:
    """``(None, 1)`` style, as users write shapes."""
    if shape is None:
        return "unknown"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (
        ",)" if len(shape) == 1 else ")")


def dtype_name(dtype) -> str:
    return np.dtype(dtype).name


class GraphError(ValueError):
    """A graph built or run wrongly; the message names the node at fault."""


class Node:
    """A value in the graph.

    ``inputs`` are the nodes this one reads; ``shape`` is the static shape (``None`` entries
    for dimensions known only at run time) and ``dtype`` the dtype it is declared with.
    Floating nodes follow the session's float dtype when run (float32 unless asked).
    """

    type_name = "Node"
    inputs: tuple = ()

    def __init__(self, shape: Shape | None, dtype, name: str | None = None):
        self.shape = None if shape is None else tuple(shape)
        self.dtype = np.dtype(dtype)
        if name is not None:
            _check_name(name)
        self.given_name = name

    @property
    def name(self) -> str:
        """The given name, or the op's type; unique names come from the graph (resolve_names)."""
        return self.given_name if self.given_name is not None else self.type_name

    @property
    def ndim(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def describe(self) -> str:
        return (f"{self.type_name} '{self.name}' (shape {format_shape(self.shape)}, "
                f"{self.dtype.name})")

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    # Operator overloading builds op nodes; the ops live in engine.ops.
    def __add__(self, other):
        from engine.ops import add
        return add(self, other)

    def __radd__(self, other):
        from engine.ops import add
        return add(other, self)

    def __sub__(self, other):
        from engine.ops import sub
        return sub(self, other)

    def __rsub__(self, other):
        from engine.ops import sub
        return sub(other, self)

    def __mul__(self, other):
        from engine.ops import mul
        return mul(self, other)

    def __rmul__(self, other):
        from engine.ops import mul
        return mul(other, self)

    def __truediv__(self, other):
        from engine.ops import div
        return div(self, other)

    def __rtruediv__(self, other):
        from engine.ops import div
        return div(other, self)

    def __matmul__(self, other):
        from engine.ops import matmul
        return matmul(self, other)

    def __rmatmul__(self, other):
        from engine.ops import matmul
        return matmul(other, self)

    def __pow__(self, other):
        from engine.ops import pow
        return pow(self, other)

    def __rpow__(self, other):
        from engine.ops import pow
        return pow(other, self)

    def __neg__(self):
        from engine.ops import neg
        return neg(self)

    # Identity semantics: nodes are dict keys (feeds, plans). No __eq__ overloading.
    __hash__ = object.__hash__


def _check_name(name) -> None:
    if not isinstance(name, str) or not name:
        raise GraphError(f"a node name must be a non-empty string, got {name!r}")
    if "\x00" in name or name.startswith("/") or name.endswith("/") or "//" in name:
        raise GraphError(f"bad node name {name!r}: no NUL, no empty scope ('//', leading or "
                         "trailing '/')")


class Placeholder(Node):
    """A value fed at run time. ``None`` in the shape marks the batch dimension."""

    type_name = "Placeholder"


def placeholder(shape: Sequence[int | None] | None, dtype=np.float32,
                name: str | None = None) -> Placeholder:
    """A value the caller feeds with ``Session.run(..., feed={node: array})``.

    ``shape`` uses ``None`` for dimensions known only when fed (the batch), e.g. ``(None, 2)``.
    A floating placeholder takes the session's float dtype; integer ones (labels) keep theirs.
    """
    if shape is not None:
        shape = tuple(None if d is None else int(d) for d in shape)
    return Placeholder(shape, dtype, name)


class Constant(Node):
    type_name = "Const"

    def __init__(self, value, dtype=None, name: str | None = None):
        value = np.asarray(value, dtype=dtype)
        if value.dtype == np.float16 or value.dtype.kind not in "fiub":
            raise GraphError(f"constant {name or ''!r}: unsupported dtype {value.dtype}")
        if value.dtype.kind == "f":
            value = value.astype(np.float64)  # cast to the session's float dtype when run
        super().__init__(value.shape, value.dtype if value.dtype.kind != "f" else np.float32,
                         name)
        self.value = value


def constant(value, dtype=None, name: str | None = None) -> Constant:
    """A fixed value. Python floats and float arrays follow the session's float dtype."""
    return Constant(value, dtype, name)


class Variable(Node):
    """A value owned by a :class:`~engine.Session`, initialised from ``initializer``.

    ``initializer`` is an array (the initial value) or a callable
    ``(rng, shape, dtype) -> array`` (see :mod:`engine.initializers`); callables need
    ``shape``. The random generator of a variable's initialiser depends only on the session's
    seed and the variable's name, so values do not depend on the order variables are first run.
    """

    type_name = "Variable"

    def __init__(self, initializer, name: str | None = None, shape=None, dtype=None,
                 trainable: bool = True):
        if callable(initializer):
            if shape is None:
                raise GraphError(f"variable {name!r}: an initializer function needs a shape")
            shape = tuple(int(d) for d in shape)
            dtype = np.float32 if dtype is None else dtype
            self.initial_value = None
        else:
            value = np.asarray(initializer, dtype=dtype)
            if value.dtype.kind not in "fiub":
                raise GraphError(f"variable {name!r}: unsupported dtype {value.dtype}")
            shape = value.shape
            dtype = np.float32 if value.dtype.kind == "f" else value.dtype
            self.initial_value = value
        if any(d is None for d in shape):
            raise GraphError(f"variable {name!r}: shape {format_shape(shape)} must be fully known")
        super().__init__(shape, dtype, name)
        self.initializer = initializer if callable(initializer) else None
        self.trainable = bool(trainable)

    def initial(self, rng: np.random.Generator, float_dtype) -> np.ndarray:
        """The initial value as a fresh array of the session's dtype."""
        dtype = float_dtype if self.dtype.kind == "f" else self.dtype
        if self.initializer is None:
            return np.array(self.initial_value, dtype=dtype, copy=True)
        value = np.asarray(self.initializer(rng, self.shape, dtype))
        if value.shape != self.shape:
            raise GraphError(f"variable '{self.name}': initializer returned shape "
                             f"{value.shape}, expected {format_shape(self.shape)}")
        return np.array(value, dtype=dtype, copy=True)


def as_node(value) -> Node:
    """A node, or a constant made from a Python number or array."""
    if isinstance(value, Node):
        return value
    if isinstance(value, (int, float, bool, np.ndarray, np.number, list, tuple)):
        return constant(value)
    raise GraphError(f"expected a graph node or a number/array, got {type(value).__name__}")


class Op(Node):
    """An operation: a small class with ``forward`` and ``backward``.

    ``forward(ctx, *inputs)`` takes numpy arrays and returns the output array;
    ``backward(ctx, grad_output, *inputs)`` returns one gradient per input (``None`` where an
    input needs none, e.g. ``ctx.needs_grad[i]`` is false). ``ctx`` is the op's
    :class:`~engine.plan.Context` in the running plan: ``ctx.output`` is the forward output,
    ``ctx.buffer(key, shape, dtype)`` memory for ``key`` that later runs reuse (no new
    allocation while shapes stay the same), ``ctx.training`` and ``ctx.rng`` the session's mode
    and generator. Ops must not rely on a buffer's contents from one run to the next: a
    forward-only plan (no gradient, no update) draws all its ops' buffers from one shared pool
    and gives them to other ops once no later step reads the value. Ops store what backward
    needs on ``ctx``; backward must not write into ``grad_output`` or any input.
    """

    type_name = "Op"
    differentiable = True

    def __init__(self, inputs: Iterable, name: str | None = None):
        if name is not None:
            _check_name(name)
        self.given_name = name  # set first: infer() names the op in its errors
        self.inputs = tuple(as_node(i) for i in inputs)
        shape, dtype = self.infer(*self.inputs)
        super().__init__(shape, dtype, name)

    def infer(self, *inputs: Node) -> tuple[Shape | None, np.dtype]:
        """Static output shape and dtype; raise GraphError for inputs that cannot work."""
        return inputs[0].shape, inputs[0].dtype

    def forward(self, ctx, *inputs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, ctx, grad_output, *inputs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{self.type_name} has no gradient")


def topological_order(fetches: Sequence[Node]) -> list[Node]:
    """Every node the fetches depend on, inputs before consumers, in a deterministic order.

    An iterative depth-first post-order following inputs in order (no recursion limit,
    no sets with arbitrary order).
    """
    order: list[Node] = []
    state: dict[int, int] = {}  # id -> 1 visiting, 2 done
    for root in fetches:
        if state.get(id(root)) == 2:
            continue
        stack = [(root, 0)]
        state[id(root)] = 1
        while stack:
            node, i = stack[-1]
            deps = graph_inputs(node)
            if i < len(deps):
                stack[-1] = (node, i + 1)
                child = deps[i]
                s = state.get(id(child))
                if s is None:
                    state[id(child)] = 1
                    stack.append((child, 0))
                elif s == 1:
                    raise GraphError(f"cycle in the graph at {child.describe()}")
            else:
                stack.pop()
                state[id(node)] = 2
                order.append(node)
    return order


def graph_inputs(node: Node) -> tuple:
    """What a node depends on: its inputs, plus extra control dependencies some ops declare."""
    return node.inputs + getattr(node, "control_inputs", ())


def resolve_names(order: Sequence[Node]) -> dict[Node, str]:
    """Unique names for the nodes of one graph, deterministic from its topological order.

    Variables and placeholders keep exactly their given names (two different variables with
    one name are an error); other nodes get ``name``, ``name_1``, ``name_2``... in order.
    """
    names: dict[Node, str] = {}
    used: dict[str, Node] = {}
    counts: dict[str, int] = {}
    # Variables first: their names are contracts (checkpoints) and never get a suffix.
    for node in order:
        if isinstance(node, Variable) and node.given_name is not None:
            other = used.get(node.given_name)
            if other is not None and other is not node:
                raise GraphError(f"two different variables are named '{node.given_name}' in one "
                                 f"graph: {other.describe()} and {node.describe()}")
            used[node.given_name] = node
            names[node] = node.given_name
    for node in order:
        if node in names:
            continue
        base = node.name
        candidate, n = base, counts.get(base, 0)
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        counts[base] = n
        used[candidate] = node
        names[node] = candidate
    return names


def ordered_names(fetches: Sequence[Node]) -> tuple[list[Node], dict[Node, str]]:
    """The graph ``fetches`` need, in topological order, and its nodes' unique names: what
    a plan runs and how it names them (:func:`topological_order`, :func:`resolve_names`)."""
    order = topological_order(fetches)
    return order, resolve_names(order)


def trainable_variables(node: Node | Sequence[Node]) -> list[Variable]:
    """The trainable variables ``node`` depends on, in topological order."""
    roots = list(node) if isinstance(node, (list, tuple)) else [node]
    return [n for n in topological_order(roots) if isinstance(n, Variable) and n.trainable]


def broadcast_shapes(a: Shape | None, b: Shape | None, what: Callable[[], str]) -> Shape | None:
    """numpy broadcasting on static shapes, ``None`` meaning unknown."""
    if a is None or b is None:
        return None
    result = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da == 1:
            result.append(db)
        elif db == 1:
            result.append(da)
        elif da is None:
            result.append(db)
        elif db is None or da == db:
            result.append(da)
        else:
            raise GraphError(f"{what()}: shapes {format_shape(a)} and {format_shape(b)} do not "
                             "broadcast")
    return tuple(reversed(result))


def result_dtype(*nodes: Node) -> np.dtype:
    """Floats win over integers; the session decides which float."""
    if any(n.dtype.kind == "f" for n in nodes):
        return np.dtype(np.float32)
    return np.result_type(*[n.dtype for n in nodes])
