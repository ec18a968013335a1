"""A neutral, deterministic description of a graph (for TensorBoard's Graphs tab).

The service turns it into TensorBoard's GraphDef; the engine knows nothing of TensorBoard.
"""

from __future__ import annotations

from engine.graph import graph_inputs, ordered_names
from engine.plan import flatten_fetches

FORMAT = 1


def graph_def(fetches) -> dict:
    """Describe the graph that ``fetches`` (a node, or a list, tuple or dict of nodes) need.

    Returns ``{"format": 1, "nodes": [{"name", "op", "inputs", "dtype", "shape"}, ...]}``
    with the nodes in topological order (inputs before consumers). Names are the graph's
    unique names (variables keep theirs, ``hidden/kernel``; ops are scoped, ``hidden/MatMul``,
    ``gradients/...``, ``SGD/...``); ``op`` is the node's type; ``inputs`` are input names
    (control dependencies included); ``dtype`` is the declared dtype (sessions may run
    float64); ``shape`` is the static shape with -1 for unknown (batch) dimensions, or None
    when the rank is unknown. The same building code gives the same description in every
    process.
    """
    nodes, _ = flatten_fetches(fetches)
    order, names = ordered_names(nodes)
    return {
        "format": FORMAT,
        "nodes": [{
            "name": names[node],
            "op": node.type_name,
            "inputs": [names[i] for i in graph_inputs(node)],
            "dtype": node.dtype.name,
            "shape": None if node.shape is None else
            [-1 if d is None else int(d) for d in node.shape],
        } for node in order],
    }
