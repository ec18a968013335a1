"""The Session: owns variable values and runs compiled plans."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.graph import (GraphError, Node, Placeholder, Variable, format_shape, ordered_names,
                          resolve_names)
from engine.plan import (Plan, aligned_empty, flatten_fetches, rebuild, side_by_side,
                         update_groups)


def name_seed(seed: int, name: str) -> np.random.Generator:
    """The generator that initialises variable ``name``: a pure function of seed and name."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


class Session:
    """Owns the values of variables (by name) and runs fetches.

    ``seed`` fixes variable initialisation and the session's random generator (``rng``,
    used by dropout; a checkpoint saves its state). ``dtype`` is the float type of every
    floating variable, placeholder and constant: float32 by default, float64 on request.
    Variables are initialised from their initialisers the first time a graph using them is
    run (or attached); there is no separate initialise step.
    """

    def __init__(self, seed: int = 0, dtype=np.float32):
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"Session dtype must be float32 or float64, got {dtype.name}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"Session seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.float_dtype = dtype
        self.rng = np.random.default_rng(self.seed)
        self._values: dict[str, np.ndarray] = {}
        self._nodes: dict[str, Variable] = {}
        self._plans: dict[Any, Plan] = {}
        # Set by Saver.restore when it loads a checkpoint before the graph is known: later
        # graphs are then checked against what the checkpoint held.
        self.restored_from: str | None = None

    # -- running
    def run(self, fetches, feed: dict | None = None, training: bool | None = None):
        """Evaluate ``fetches`` (a node, or a list, tuple or dict of nodes).

        ``feed`` maps placeholders to arrays. ``training`` switches dropout on; by default it
        is on exactly when the fetches include an optimizer's train op. Returned arrays are
        copies; a train op's entry is ``None``. Fetched values are those the step used,
        before the optimizer's update.
        """
        nodes, structure = flatten_fetches(fetches)
        feed = {} if feed is None else feed
        if not isinstance(feed, dict):
            raise GraphError(f"feed must be a dict of placeholder -> array, got "
                             f"{type(feed).__name__}")
        fed = frozenset(feed)
        plan = self._plans.get((nodes, fed, training))
        if plan is None:  # checked once per plan: a plan's key holds exactly these feeds
            for key in feed:
                if not isinstance(key, Placeholder):
                    what = (key.describe() if isinstance(key, Node)
                            else f"{type(key).__name__} {key!r}")
                    raise GraphError(f"can only feed placeholders, not {what}")
            plan = self._plans[nodes, fed, training] = Plan(
                nodes, fed, training, rng=self.rng, float_dtype=self.float_dtype,
                bind=self._bind)
        return rebuild(structure, plan.run(feed))

    def attach(self, *nodes: Node) -> dict[str, Variable]:
        """Own (and initialise) the variables that ``nodes`` depend on, without running.

        ``run`` does this by itself; call it before restoring a checkpoint so that the
        restore can be checked against the whole graph. Returns the graph's variables by name.
        """
        order, names = ordered_names(list(nodes))
        found = {names[n]: n for n in order if isinstance(n, Variable)}
        self._bind(found, [[names[v] for v in group] for group in update_groups(order)])
        return found

    # -- variables
    def _bind(self, variables: dict[str, Variable],
              groups: Sequence[Sequence[str]] = ()) -> dict[str, np.ndarray]:
        """The arrays holding ``variables`` (name -> node), creating new ones from their
        initialisers. Every problem is reported in one error: a variable whose stored shape
        differs, and, after a checkpoint was restored into this session before its graph was
        known (``restored_from``), any variable the checkpoint lacks.

        ``groups`` (lists of names, see ``plan.update_groups``) are created side by side in
        one block each when all their variables are new, so that an optimizer can update
        them in one call."""
        problems = []
        for name, node in variables.items():
            value = self._values.get(name)
            clash = self._name_clash(name, node)
            if clash:
                problems.append(clash)
            elif value is not None and value.shape != node.shape:
                problems.append(f"variable '{name}' has shape {format_shape(value.shape)} in "
                                f"this session but the graph declares {format_shape(node.shape)}")
            elif value is None and self.restored_from is not None:
                problems.append(f"variable '{name}' {format_shape(node.shape)} is not in the "
                                f"checkpoint restored from {self.restored_from}")
        if problems:
            raise GraphError("the graph does not match this session's variables:\n  "
                             + "\n  ".join(problems))
        for group in groups:
            if all(name in variables and name not in self._values for name in group):
                self._store_side_by_side([(name, variables[name]) for name in group])
        return {name: self._storage(node, name) for name, node in variables.items()}

    def _store_side_by_side(self, members: list[tuple[str, Variable]]) -> None:
        """Create new floating variables as views into one aligned block, each on a 64-byte
        boundary (``plan.side_by_side``); the gaps are zero. Values are those each variable
        would get alone."""
        if len({name for name, _ in members}) != len(members) or any(
                node.dtype.kind != "f" for _, node in members):
            return
        dtype = self.float_dtype
        offsets, length = side_by_side([node.shape for _, node in members], dtype)
        block = aligned_empty((length,), dtype)
        block.fill(0)
        for (name, node), offset in zip(members, offsets):
            value = block[offset:offset + math.prod(node.shape)].reshape(node.shape)
            value[...] = node.initial(name_seed(self.seed, name), dtype)
            self._values[name] = value

    def _name_clash(self, name: str, node: Variable) -> str | None:
        """Why ``node`` cannot be bound to ``name``, if the name already holds another
        variable and one of them is unnamed: an unnamed variable's name depends on the graph
        it is run in, so sharing the value would be an accident."""
        known = self._nodes.get(name)
        if known is None or known is node or None not in (known.given_name, node.given_name):
            return None
        return (f"variable '{name}': this session holds another variable under that name, and "
                "unnamed variables are named by their place in each graph; give them names")

    def _storage(self, node: Variable, name: str) -> np.ndarray:
        """The array that holds ``node``'s value, created from its initializer if new."""
        clash = self._name_clash(name, node)
        if clash:
            raise GraphError(clash)
        value = self._values.get(name)
        if value is None:
            initial = node.initial(name_seed(self.seed, name), self.float_dtype)
            value = aligned_empty(initial.shape, initial.dtype)
            value[...] = initial
            self._values[name] = value
        elif value.shape != node.shape:
            raise GraphError(f"variable '{name}' has shape {format_shape(value.shape)} in this "
                             f"session but the graph declares {format_shape(node.shape)}")
        self._nodes.setdefault(name, node)
        return value

    def variables(self, copy: bool = True) -> dict[str, np.ndarray]:
        """Every variable's value by name, optimizer slots included, sorted by name; each
        array has its variable's shape.

        Copies by default. ``copy=False`` gives the session's own arrays, which compiled
        plans read and update in place: for reading without the cost of a copy (saving a
        checkpoint) or for changing a value in place (a gradient check's perturbation);
        never replace or resize them (``assign`` sets a whole value).
        """
        if copy:
            return {name: self._values[name].copy() for name in sorted(self._values)}
        return {name: self._values[name] for name in sorted(self._values)}

    def variable_nodes(self) -> dict[str, Variable]:
        """The variable nodes this session has seen, by name."""
        return dict(self._nodes)

    def assign(self, target: Variable | str, value) -> None:
        """Set a variable's value (by node or name), in place when it exists.

        Values keep the variable's shape and the session's dtype; a new name creates the
        variable's storage (restoring a checkpoint before the graph has run does this).
        """
        name = target if isinstance(target, str) else None
        if isinstance(target, Variable):
            known = [n for n, v in self._nodes.items() if v is target]
            name = known[0] if known else resolve_names([target])[target]
            self._storage(target, name)
        if name is None:
            raise GraphError(f"assign takes a Variable or a variable name, not "
                             f"{type(target).__name__}")
        value = np.asarray(value)
        current = self._values.get(name)
        if current is None:
            dtype = self.float_dtype if value.dtype.kind == "f" else value.dtype
            current = self._values[name] = aligned_empty(value.shape, dtype)
        elif current.shape != value.shape:
            raise GraphError(f"cannot assign shape {format_shape(value.shape)} to variable "
                             f"'{name}' of shape {format_shape(current.shape)}")
        if not np.can_cast(value.dtype, current.dtype, "same_kind"):
            raise GraphError(f"cannot assign {value.dtype.name} to variable '{name}' "
                             f"({current.dtype.name})")
        np.copyto(current, value, casting="same_kind")

    def __repr__(self) -> str:
        return (f"<Session seed={self.seed} dtype={self.float_dtype.name} "
                f"variables={len(self._values)}>")

