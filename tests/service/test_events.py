"""service.events: read back with TensorBoard's own readers and a real tensorboard server."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

import engine as en
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins.hparams import api_pb2

from service import events
from service.events import RunWriter, truncate_run, write_experiment
from tests.service.helpers import atomic_files_full_after
from tests.service.tb_helpers import (TensorBoardServer, event_files, hparam_values, hparams_data,
                                      load_run, raw_events, scalar_points, struct_value,
                                      written_points)

GRAPH = {"format": 1, "nodes": [
    {"name": "x", "op": "Placeholder", "inputs": [], "dtype": "float32", "shape": [-1, 2]},
    {"name": "hidden/kernel", "op": "Variable", "inputs": [], "dtype": "float32",
     "shape": [2, 3]},
    {"name": "hidden/MatMul", "op": "MatMul", "inputs": ["x", "hidden/kernel"],
     "dtype": "float32", "shape": [-1, 3]},
    {"name": "loss", "op": "ReduceMean", "inputs": ["hidden/MatMul"], "dtype": "float64",
     "shape": None},
]}


def steps_of(points: list[tuple[int, float]]) -> list[int]:
    return [step for step, _ in points]


def step_problems(points: dict[str, list[tuple[int, float]]],
                  expected: dict[str, range]) -> list[str]:
    """What differs from "each expected step exactly once, in order" for each tag."""
    problems = []
    for tag, steps in expected.items():
        got = steps_of(points.get(tag, []))
        if got != list(steps):
            extra = len(got) - len(set(got))
            problems.append(f"{tag}: {len(got)} points, {extra} repeated, steps "
                            f"{min(got, default=None)}..{max(got, default=None)}, "
                            f"expected {steps}")
    return problems


# ------------------------------------------------------------------ what is written reads back

def test_scalars_read_back_at_the_reported_steps(tmp_path):
    with RunWriter(tmp_path) as writer:
        for step in (0, 3, 7):
            writer.scalars(step, {"loss": 1.0 / (step + 1), "accuracy/val": step * 0.1})
    expected = {"loss": [(s, 1.0 / (s + 1)) for s in (0, 3, 7)],
                "accuracy/val": [(s, s * 0.1) for s in (0, 3, 7)]}
    for points in (scalar_points(tmp_path), written_points(tmp_path)):
        assert sorted(points) == sorted(expected)
        for tag, want in expected.items():
            assert steps_of(points[tag]) == steps_of(want)
            np.testing.assert_allclose([v for _, v in points[tag]], [v for _, v in want],
                                       rtol=1e-6)    # simple_value is a float32


def test_histogram_reads_back_and_skips_non_finite_values(tmp_path):
    values = np.arange(100, dtype=np.float32).reshape(10, 10)
    with RunWriter(tmp_path) as writer:
        writer.histogram("hidden/kernel", np.append(values, [np.nan, np.inf]), step=9)
        writer.histogram("diverged", [np.nan, np.nan], step=9)      # nothing to show
    run = load_run(tmp_path)
    assert run.Tags()["histograms"] == ["hidden/kernel"]
    (event,) = run.Histograms("hidden/kernel")
    histo = event.histogram_value
    assert event.step == 9
    assert (histo.num, histo.min, histo.max, histo.sum) == (100, 0, 99, values.sum())
    assert sum(histo.bucket) == 100


def test_text_reads_back(tmp_path):
    with RunWriter(tmp_path) as writer:
        writer.text("stop_reason", "diverged", step=12)
    (event,) = load_run(tmp_path).Tensors("stop_reason")
    assert event.step == 12
    assert event.tensor_proto.string_val == [b"diverged"]


def test_graph_parses_into_a_graphdef_with_inputs_dtypes_and_shapes(tmp_path):
    with RunWriter(tmp_path) as writer:
        writer.graph(GRAPH)
        writer.graph(GRAPH)             # the same graph again: written once
    assert sum(e.HasField("graph_def") for e in raw_events(tmp_path)) == 1
    graph = load_run(tmp_path).Graph()
    nodes = {node.name: node for node in graph.node}
    assert list(nodes) == [n["name"] for n in GRAPH["nodes"]]
    assert nodes["hidden/MatMul"].op == "MatMul"
    assert list(nodes["hidden/MatMul"].input) == ["x", "hidden/kernel"]
    assert nodes["x"].attr["dtype"].type == types_pb2.DT_FLOAT
    assert nodes["loss"].attr["dtype"].type == types_pb2.DT_DOUBLE
    (shape,) = nodes["hidden/MatMul"].attr["_output_shapes"].list.shape
    assert [d.size for d in shape.dim] == [-1, 3]
    (shape,) = nodes["loss"].attr["_output_shapes"].list.shape
    assert shape.unknown_rank
    assert graph.versions.producer > 0


def small_model_graph() -> dict:
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    hidden = en.layers.dense(x, 4, activation="relu", name="hidden")
    loss = en.losses.sigmoid_cross_entropy(en.layers.dense(hidden, 1, name="out"), y)
    return en.graph_def([en.optim.SGD(lr=0.1).minimize(loss), loss])


def test_the_engine_graph_reads_back_node_for_node(tmp_path):
    described = small_model_graph()
    with RunWriter(tmp_path) as writer:
        writer.graph(described)
    graph = load_run(tmp_path).Graph()
    assert [(n.name, n.op, list(n.input)) for n in graph.node] == [
        (n["name"], n["op"], n["inputs"]) for n in described["nodes"]]
    assert [types_pb2.DataType.Name(n.attr["dtype"].type) for n in graph.node] == [
        {"float32": "DT_FLOAT", "int64": "DT_INT64"}[n["dtype"]] for n in described["nodes"]]


@pytest.mark.parametrize("graph, message", [
    ({"nodes": []}, "format"),
    ({"format": 1, "nodes": [{"name": "a", "op": "Add", "inputs": ["b"]}]}, "'a'.*'b'"),
    ({"format": 1, "nodes": [{"name": "a", "op": "X"}, {"name": "a", "op": "X"}]}, "two nodes"),
    ({"format": 1, "nodes": [{"name": "a", "op": "X", "dtype": "float33"}]}, "'a'.*float33"),
    ({"format": 1, "nodes": [{"name": "a", "op": "X", "shape": [2, -5]}]}, "'a'.*shape"),
])
def test_a_bad_graph_is_refused_naming_the_fault(tmp_path, graph, message):
    with RunWriter(tmp_path) as writer, pytest.raises(ValueError, match=message):
        writer.graph(graph)


@pytest.mark.parametrize("status", ["SUCCESS", "FAILURE"])
def test_hparams_session_start_and_end_read_back(tmp_path, status):
    hparams = {"lr": 0.1, "hidden": 8, "activation": "relu", "nesterov": True,
               "sizes": [16, 16]}
    with RunWriter(tmp_path) as writer:
        writer.hparams_start(hparams, group_name="lr=0.1", start_time=1000.0)
        writer.scalars(0, {"loss": 1.0})
        writer.hparams_end(status, end_time=1010.0)
        with pytest.raises(RuntimeError, match="session_end_info"):
            writer.hparams_end("SUCCESS", end_time=1020.0)
        with pytest.raises(ValueError, match="STOPPED"):
            writer.hparams_end("STOPPED", end_time=1020.0)
    data = hparams_data(tmp_path)
    start = data["_hparams_/session_start_info"].session_start_info
    end = data["_hparams_/session_end_info"].session_end_info
    assert hparam_values(start) == {"lr": 0.1, "hidden": 8.0, "activation": "relu",
                                    "nesterov": True, "sizes": "[16, 16]"}
    assert (start.group_name, start.start_time_secs) == ("lr=0.1", 1000.0)
    assert end.status == api_pb2.Status.Value("STATUS_" + status)
    assert end.end_time_secs == 1010.0


def test_the_experiment_lists_domains_and_metrics_once(tmp_path):
    space = {"lr": [0.01, 0.1], "hidden": [3, 8], "act": ["relu", "tanh"],
             "decay": (1e-5, 1e-2)}
    path = write_experiment(tmp_path, space, ["loss", "accuracy/val"])
    first = path.read_bytes()
    write_experiment(tmp_path, space, ["loss", "accuracy/val"])     # a relaunch
    assert event_files(tmp_path) == [path] and path.read_bytes() == first
    experiment = hparams_data(tmp_path)["_hparams_/experiment"].experiment
    infos = {info.name: info for info in experiment.hparam_infos}
    assert [struct_value(v) for v in infos["lr"].domain_discrete.values] == [0.01, 0.1]
    assert infos["lr"].type == api_pb2.DATA_TYPE_FLOAT64
    assert [struct_value(v) for v in infos["act"].domain_discrete.values] == ["relu", "tanh"]
    assert infos["act"].type == api_pb2.DATA_TYPE_STRING
    interval = infos["decay"].domain_interval
    assert (interval.min_value, interval.max_value) == (1e-5, 1e-2)
    assert [m.name.tag for m in experiment.metric_infos] == ["loss", "accuracy/val"]

    write_experiment(tmp_path, {"lr": [0.5]}, ["loss"])               # changed: replaced
    assert event_files(tmp_path) == [path]
    experiment = hparams_data(tmp_path)["_hparams_/experiment"].experiment
    assert [i.name for i in experiment.hparam_infos] == ["lr"]


@pytest.mark.parametrize("space, metrics, message", [
    ({"lr": (1.0, 0.1)}, ["loss"], "'lr'.*min <= max"),
    ({"lr": []}, ["loss"], "'lr'.*non-empty"),
    ({"lr": [0.1]}, [], "metrics"),
])
def test_a_bad_experiment_is_refused_naming_the_fault(tmp_path, space, metrics, message):
    with pytest.raises(ValueError, match=message):
        write_experiment(tmp_path, space, metrics)
    assert event_files(tmp_path) == []


# ------------------------------------------------------------------ file names

@pytest.mark.timeout(20)
def test_two_writers_in_the_same_second_keep_both_files_in_write_order(tmp_path, monkeypatch):
    monkeypatch.setattr(events.time, "time", lambda: 1_700_000_000.5)
    paths = []
    for tag in ("first", "second"):
        with RunWriter(tmp_path) as writer:
            writer.scalars(0, {tag: 1.0})
            paths.append(writer.path)
    assert event_files(tmp_path) == paths and paths[0] != paths[1]
    assert sorted(written_points(tmp_path)) == ["first", "second"]


def test_a_new_file_sorts_after_files_with_a_later_clock(tmp_path):
    # Written by another node whose clock is ahead, in tensorboardX's naming.
    ahead = tmp_path / "events.out.tfevents.9999999990.otherhost"
    with RunWriter(tmp_path) as writer:
        ahead.write_bytes(writer.path.read_bytes())
    with RunWriter(tmp_path) as writer:
        assert event_files(tmp_path)[-1] == writer.path


# ------------------------------------------------------------------ failures and durability

def fail_after(limit: int):
    """An os.write that writes at most ``limit`` bytes in all, then raises ENOSPC."""
    real_write, budget = os.write, [limit]

    def write(fd, data):
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[:budget[0]]))
        budget[0] -= written
        return written
    return write


@pytest.mark.timeout(20)
def test_enospc_while_writing_raises_at_once_and_keeps_whole_events(tmp_path, monkeypatch):
    writer = RunWriter(tmp_path)
    writer.scalars(0, {"loss": 1.0})
    size = writer.path.stat().st_size
    monkeypatch.setattr(events.os, "write", fail_after(10))     # half a record, then full
    with pytest.raises(OSError) as raised:
        writer.scalars(1, {"loss": 0.5})
    assert raised.value.errno == errno.ENOSPC
    assert writer.path.stat().st_size == size                  # the partial record is cut
    monkeypatch.undo()
    writer.scalars(2, {"loss": 0.25})                          # space again: writing goes on
    writer.close()
    assert steps_of(written_points(tmp_path)["loss"]) == [0, 2]


def test_enospc_on_open_leaves_no_event_file(tmp_path, monkeypatch):
    monkeypatch.setattr(events.os, "write", fail_after(0))
    with pytest.raises(OSError, match="No space"):
        RunWriter(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_enospc_in_write_experiment_leaves_no_partial_file(tmp_path, monkeypatch):
    atomic_files_full_after(monkeypatch, 20)
    with pytest.raises(OSError, match="No space"):
        write_experiment(tmp_path, {"lr": [0.1, 1.0]}, ["loss"])
    assert list(tmp_path.iterdir()) == []


def test_enospc_during_a_resume_rewrite_keeps_the_old_file(tmp_path, monkeypatch):
    with RunWriter(tmp_path) as writer:
        for step in range(10):
            writer.scalars(step, {"loss": step})
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    atomic_files_full_after(monkeypatch, 30)
    with pytest.raises(OSError, match="No space"):
        RunWriter(tmp_path, resume_step=5)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_sync_fsyncs_the_event_file(tmp_path, monkeypatch):
    writer = RunWriter(tmp_path)
    writer.scalars(0, {"loss": 1.0})
    synced, real_fsync = [], os.fsync

    def fsync(fd):
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    writer.sync()
    assert writer.path.stat().st_ino in synced
    assert tmp_path.stat().st_ino in synced                     # its name is durable too
    synced.clear()
    writer.scalars(1, {"loss": 0.7})      # written after the sync: close makes it durable
    writer.close()
    assert writer.path.stat().st_ino in synced
    with pytest.raises(ValueError, match="closed"):
        writer.scalars(1, {"loss": 0.5})


def test_the_guard_runs_before_each_write_and_can_fence(tmp_path):
    calls = []
    fenced = False

    def guard():
        calls.append(1)
        if fenced:
            raise PermissionError("attempt 1 is stale")
    writer = RunWriter(tmp_path, guard=guard)
    writer.scalars(0, {"loss": 1.0})
    writer.histogram("w", [1.0, 2.0], 0)
    writer.text("note", "hi", 0)
    assert len(calls) == 4                      # open, and each of the three writes
    size = writer.path.stat().st_size
    fenced = True
    with pytest.raises(PermissionError, match="stale"):
        writer.scalars(1, {"loss": 0.5})
    with pytest.raises(PermissionError):
        RunWriter(tmp_path, resume_step=0, guard=guard)
    assert writer.path.stat().st_size == size and len(event_files(tmp_path)) == 1
    writer.close()


@pytest.mark.parametrize("values, message", [
    ({}, "non-empty"), ({"loss": "high"}, "'loss'.*not a number"), ({"": 1.0}, "tag"),
])
def test_bad_scalars_are_refused_naming_the_fault(tmp_path, values, message):
    with RunWriter(tmp_path) as writer, pytest.raises(ValueError, match=message):
        writer.scalars(0, values)
    with RunWriter(tmp_path) as writer, pytest.raises(ValueError, match="step"):
        writer.scalars(-1, {"loss": 1.0})


# ------------------------------------------------------------------ resume

def write_then_resume(run_dir: Path, *, resume: bool) -> None:
    """Steps 0..59 of tags A and B; then a second attempt from step 30 writes A only, opened
    with ``resume_step=30`` (or, for the negative control, without it)."""
    with RunWriter(run_dir) as writer:
        writer.graph(GRAPH)
        writer.hparams_start({"lr": 0.1}, "g", 1.0)
        for step in range(60):
            writer.scalars(step, {"A": step, "B": -step})
            if step % 10 == 9:
                writer.histogram("w", np.full(4, step), step)
        writer.hparams_end("FAILURE", 2.0)
    with RunWriter(run_dir, resume_step=30 if resume else None) as writer:
        writer.graph(GRAPH)
        writer.hparams_start({"lr": 0.1}, "g", 3.0)
        for step in range(30, 60):
            writer.scalars(step, {"A": 1000 + step})
        writer.hparams_end("SUCCESS", 4.0)


EXPECTED = {"A": range(60), "B": range(30)}


def test_resume_shows_each_step_once_in_the_python_readers(tmp_path):
    write_then_resume(tmp_path, resume=True)
    assert step_problems(written_points(tmp_path), EXPECTED) == []
    points = scalar_points(tmp_path)
    assert step_problems(points, EXPECTED) == []
    assert points["A"][29][1] == 29 and points["A"][30][1] == 1030      # old, then new
    run = load_run(tmp_path)
    assert [e.step for e in run.Histograms("w")] == [9, 19, 29]
    assert sum(e.HasField("graph_def") for e in raw_events(tmp_path)) == 1
    data = hparams_data(tmp_path)                                    # the new session only
    assert data["_hparams_/session_start_info"].session_start_info.start_time_secs == 3.0
    assert data["_hparams_/session_end_info"].session_end_info.status == api_pb2.STATUS_SUCCESS


def test_without_the_rewrite_the_python_readers_show_duplicates(tmp_path):
    write_then_resume(tmp_path, resume=False)           # negative control
    assert step_problems(written_points(tmp_path), EXPECTED)
    assert step_problems(scalar_points(tmp_path), EXPECTED)


def test_the_rewrite_is_idempotent_and_cuts_a_damaged_tail(tmp_path):
    with RunWriter(tmp_path) as writer:
        for step in range(10):
            writer.scalars(step, {"loss": step})
    path = writer.path
    with path.open("ab") as file:                       # a writer killed mid-record
        file.write(events.encode_record(b"x" * 50)[:20])
    truncate_run(tmp_path, 5)
    once = path.read_bytes()
    truncate_run(tmp_path, 5)
    assert path.read_bytes() == once
    assert steps_of(written_points(tmp_path)["loss"]) == [0, 1, 2, 3, 4]
    truncate_run(tmp_path, 0)                           # nothing left: the file goes
    assert event_files(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == []   # and no temporary file stays


def test_resume_from_zero_keeps_the_graph(tmp_path):
    with RunWriter(tmp_path) as writer:
        writer.graph(GRAPH)
        writer.scalars(0, {"loss": 1.0})
    with RunWriter(tmp_path, resume_step=0) as writer:
        writer.graph(GRAPH)
    assert written_points(tmp_path) == {}
    assert sum(e.HasField("graph_def") for e in raw_events(tmp_path)) == 1


# ------------------------------------------------------------------ the tensorboard server

def server_points(tb: TensorBoardServer, run: str) -> dict[str, list[tuple[int, float]]]:
    return {tag: tb.settled(lambda tag=tag: tb.scalars(run, tag)) for tag in EXPECTED}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("load_fast", ["auto", "false"])
def test_resume_shows_each_step_once_in_the_tensorboard_server(tmp_path, load_fast):
    write_then_resume(tmp_path / "trial", resume=True)
    write_then_resume(tmp_path / "control", resume=False)      # negative control
    with TensorBoardServer(tmp_path, load_fast=load_fast) as tb:
        if load_fast == "auto":                                  # really the Rust loader
            assert any("tensorboard_data_server" in cmd for _, cmd in tb.processes())
        assert step_problems(server_points(tb, "trial"), EXPECTED) == []
        assert step_problems(server_points(tb, "control"), EXPECTED)


@pytest.mark.timeout(60)
def test_the_server_shows_hparams_sessions_and_the_graph(tmp_path):
    write_experiment(tmp_path, {"lr": [0.1, 1.0]}, ["loss"])
    for lr, status in ((0.1, "SUCCESS"), (1.0, "FAILURE")):
        with RunWriter(tmp_path / f"lr={lr}") as writer:
            writer.graph(small_model_graph())
            writer.hparams_start({"lr": lr}, f"lr={lr}", 1.0)
            writer.scalars(0, {"loss": lr})
            writer.hparams_end(status, 2.0)
    with TensorBoardServer(tmp_path) as tb:
        experiment = tb.settled(lambda: tb.post_json("/data/plugin/hparams/experiment",
                                                     {"experimentName": ""}))
        assert experiment["hparamInfos"][0]["domainDiscrete"] == [0.1, 1.0]
        groups = tb.settled(lambda: tb.post_json("/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                                      "STATUS_FAILURE", "STATUS_RUNNING"],
            "startIndex": 0, "sliceSize": 10})["sessionGroups"])
        graph = tb.get("/data/plugin/graphs/graph", run="lr=0.1").decode()
    assert 'name: "hidden/MatMul"' in graph and 'input: "hidden/kernel"' in graph
    statuses = {g["hparams"]["lr"]: g["sessions"][0]["status"] for g in groups}
    assert statuses == {0.1: "STATUS_SUCCESS", 1.0: "STATUS_FAILURE"}


def test_the_server_helper_leaves_no_process(tmp_path):
    tb = TensorBoardServer(tmp_path)
    with tb:
        pgid = tb.pgid
        assert tb.processes()
    assert TensorBoardServer.group_processes(pgid) == []
