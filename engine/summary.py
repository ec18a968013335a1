"""Summaries in the graph, as in TensorFlow 1.x: nodes whose value is named data to log.

    en.summary.scalar("loss", loss)
    en.summary.histogram("hidden/kernel", kernel)
    merged = en.summary.merge_all(loss)        # the summaries computed from loss's graph
    _, summaries = sess.run([train, merged], feed)
    summaries.scalars                          # {"loss": 0.41}
    summaries.histograms                       # {"hidden/kernel": array of its shape}

Running a summary node gives a :class:`Summaries`, plain data; the service writes it to
TensorBoard (``trial.report(step, summaries)`` in a sweep, ``SummaryWriter`` elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.graph import (GraphError, Node, Op, Placeholder, format_shape, graph_inputs,
                          topological_order)
from engine.plan import flatten_fetches


@dataclass(eq=False)
class Summaries:
    """What running a summary node gives: scalars ``{tag: float}`` and histogram values
    ``{tag: array}`` (copies, of the node's shape), each in the order merged."""

    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)

    def __repr__(self) -> str:
        shapes = {tag: format_shape(v.shape) for tag, v in self.histograms.items()}
        return f"Summaries(scalars={self.scalars}, histograms={shapes})"


class Summary(Op):
    """A summary node; ``tags`` are the tags its value holds. Not differentiable."""

    differentiable = False
    tags: tuple[str, ...] = ()

    def infer(self, *inputs: Node):
        return (), np.dtype(object)


class ScalarSummary(Summary):
    """A one-value node as a scalar named ``tag``."""

    type_name = "ScalarSummary"

    def __init__(self, tag: str, node: Node):
        super().__init__((node,), name=tag)  # named after its tag, as in TensorFlow
        self.tag = tag
        self.tags = (tag,)

    def infer(self, node: Node):
        if node.shape is not None and any(d is not None and d != 1 for d in node.shape):
            raise GraphError(f"scalar summary '{self.given_name}': {node.describe()} has more "
                             "than one value; reduce it first (en.reduce_mean)")
        return super().infer(node)

    def forward(self, ctx, value):
        if value.size != 1:
            raise GraphError(f"scalar summary '{self.tag}': the value has shape "
                             f"{format_shape(value.shape)}, not one value")
        return Summaries(scalars={self.tag: float(value.reshape(()))})


class HistogramSummary(Summary):
    """A node's values (any shape) as a histogram named ``tag``."""

    type_name = "HistogramSummary"

    def __init__(self, tag: str, node: Node):
        super().__init__((node,), name=tag)
        self.tag = tag
        self.tags = (tag,)

    def forward(self, ctx, value):
        # A copy: the input may be a buffer that later steps of the plan reuse.
        return Summaries(histograms={self.tag: np.array(value, copy=True)})


class MergeSummary(Summary):
    """Several summary nodes as one; their tags must differ."""

    type_name = "MergeSummary"

    def __init__(self, summaries: Sequence[Summary], name: str | None = None):
        seen: dict[str, Summary] = {}
        for s in summaries:
            if not isinstance(s, Summary):
                what = s.describe() if isinstance(s, Node) else f"{type(s).__name__} {s!r}"
                raise GraphError(f"merge takes summary nodes (en.summary.scalar, histogram, "
                                 f"merge), not {what}")
            for tag in s.tags:
                if tag in seen:
                    raise GraphError(f"two summaries are tagged '{tag}' in one merge: "
                                     f"{seen[tag].describe()} and {s.describe()}")
                seen[tag] = s
        super().__init__(summaries, name)
        self.tags = tuple(seen)

    def forward(self, ctx, *parts: Summaries):
        merged = Summaries()
        for part in parts:
            merged.scalars.update(part.scalars)
            merged.histograms.update(part.histograms)
        return merged


def _watch(summary: Summary) -> Summary:
    """Hang ``summary`` on the leaves of the graph it reads (variables, placeholders,
    constants): there is no default graph to collect summaries in, so ``merge_all`` finds
    them from the graph of the nodes it is given."""
    for node in topological_order(list(summary.inputs)):
        if not graph_inputs(node):
            node.__dict__.setdefault("_summaries", []).append(summary)
    return summary


def scalar(tag: str, node: Node) -> ScalarSummary:
    """A summary of one value (a loss, an accuracy: shape ``()`` or all ones) tagged ``tag``
    (TensorBoard groups tags by ``/``)."""
    return _watch(ScalarSummary(tag, node))


def histogram(tag: str, node: Node) -> HistogramSummary:
    """A summary of the values of ``node`` (any shape), shown as a histogram tagged ``tag``."""
    return _watch(HistogramSummary(tag, node))


def merge(summaries: Sequence[Summary], name: str | None = None) -> MergeSummary:
    """One summary node running ``summaries`` (in that order); two with one tag are an error."""
    return MergeSummary(list(summaries), name)


def merge_all(fetches, name: str | None = None) -> MergeSummary:
    """Merge the summaries computed from the graph of ``fetches`` (a node, or a list, tuple
    or dict of nodes), ordered by tag.

    A summary belongs when it reads a variable, placeholder or constant of that graph and
    needs no placeholder outside it, so running the merge needs the feed ``fetches`` need:
    ``merge_all(loss)`` takes the summaries of the loss, of its layers and their variables,
    and leaves out those of a validation graph fed through placeholders of its own.
    Raises GraphError when there is none.
    """
    roots, _ = flatten_fetches(fetches)
    order = topological_order(list(roots))
    placeholders = {n for n in order if isinstance(n, Placeholder)}
    found: dict[Summary, None] = {}
    for node in order:
        for s in node.__dict__.get("_summaries", ()):
            if s not in found and all(n in placeholders for n in topological_order([s])
                                      if isinstance(n, Placeholder)):
                found[s] = None
    if not found:
        names = ", ".join(f"'{n.name}'" for n in roots)
        raise GraphError(f"merge_all: no summary is computed from the graph of {names} "
                         "(make them with en.summary.scalar or histogram)")
    return merge(sorted(found, key=lambda s: s.tag), name)
