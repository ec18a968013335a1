"""graph_def: a neutral, deterministic description of a graph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine as en
from tests.engine.checkpoint_worker import FEATURES, build

WORKER = Path(__file__).with_name("checkpoint_worker.py")


def by_name(description: dict) -> dict[str, dict]:
    return {node["name"]: node for node in description["nodes"]}


def test_nodes_are_unique_topological_and_inputs_resolve():
    description = en.graph_def(build("sgd")[3])
    assert description["format"] == 1
    names = [node["name"] for node in description["nodes"]]
    assert len(names) == len(set(names))
    seen = set()
    for node in description["nodes"]:
        assert set(node) == {"name", "op", "inputs", "dtype", "shape"}
        for name in node["inputs"]:
            assert name in seen, f"{node['name']} reads {name} before it is described"
        seen.add(node["name"])
    json.dumps(description)  # plain JSON types only


def test_names_ops_dtypes_and_shapes():
    train = build("sgd", hidden=(16,), dropout=0.5)[3]
    nodes = by_name(en.graph_def(train))
    assert nodes["x"] == {"name": "x", "op": "Placeholder", "inputs": [], "dtype": "float32",
                          "shape": [-1, FEATURES]}
    assert nodes["y"]["dtype"] == "int64" and nodes["y"]["shape"] == [-1]
    assert nodes["hidden0/kernel"] == {"name": "hidden0/kernel", "op": "Variable",
                                       "inputs": [], "dtype": "float32",
                                       "shape": [FEATURES, 16]}
    assert nodes["hidden0/MatMul"]["op"] == "MatMul"
    assert nodes["hidden0/MatMul"]["inputs"] == ["x", "hidden0/kernel"]
    assert nodes["hidden0/MatMul"]["shape"] == [-1, 16]
    assert nodes["hidden0/BiasAdd"]["inputs"] == ["hidden0/MatMul", "hidden0/bias"]
    assert nodes["hidden0/Relu"]["op"] == "Relu"
    assert nodes["Dropout"]["inputs"] == ["hidden0/Relu"]
    assert nodes["gradients/out/kernel"]["op"] == "Gradient"
    assert nodes["gradients/out/kernel"]["shape"] == [16, 3]
    assert nodes["SGD/out/kernel/momentum"]["shape"] == [16, 3]
    assert nodes["SGD/step"] == {"name": "SGD/step", "op": "Variable", "inputs": [],
                                 "dtype": "int64", "shape": []}
    minimize = nodes["SGD/minimize"]
    assert minimize["op"] == "Minimize" and minimize["inputs"][-1] == "SGD/step"
    assert "gradients/hidden0/kernel" in minimize["inputs"]
    assert en.graph_def(train)["nodes"][-1]["name"] == "SGD/minimize"


def test_unnamed_ops_get_unique_names_and_fetch_forms():
    x = en.placeholder((None, 3), name="x")
    a = en.relu(x)
    b = en.relu(en.relu(x) + a)
    single = en.graph_def(b)
    names = [node["name"] for node in single["nodes"]]
    assert names.count("Relu") == 1 and {"Relu_1", "Relu_2", "Add"} <= set(names)
    assert en.graph_def([b]) == single == en.graph_def({"out": b})
    assert en.graph_def((a, b))["nodes"][:2] == single["nodes"][:2]
    unknown_rank = en.placeholder(None, name="anything")
    assert by_name(en.graph_def(unknown_rank))["anything"]["shape"] is None
    with pytest.raises(en.GraphError, match="cannot fetch"):
        en.graph_def("loss")


def test_float64_sessions_do_not_change_the_description():
    x, y, loss, _ = build("adam")
    before = en.graph_def(loss)
    sess = en.Session(dtype=np.float64)
    sess.run(loss, feed={x: np.zeros((2, FEATURES)), y: np.zeros(2, np.int64)})
    assert en.graph_def(loss) == before
    assert by_name(before)["out/kernel"]["dtype"] == "float32"


def test_same_building_code_same_description_in_another_process(tmp_path):
    in_process = en.graph_def(build("sgd")[3])
    assert en.graph_def(build("sgd")[3]) == in_process  # built twice in one process
    out = tmp_path / "graph.json"
    subprocess.run([sys.executable, str(WORKER), "graph-def", "--out", str(out)], check=True,
                   timeout=120)
    assert json.loads(out.read_text()) == in_process
