"""TensorBoard event files: one synchronous, durable writer per run, rewritten on resume.

Why not tensorboardX's ``SummaryWriter``: its ``flush()`` does not wait for its background
queue, its writer thread dies silently on a write error (then ``add_*`` blocks on a full
queue), and it names files by the second, so two writers opened in one second truncate each
other. Here every event is framed as a TFRecord (tensorboardX's protos and masked crc32c) and
written with ``os.write`` at once: an ``OSError`` such as ENOSPC reaches the caller, and
``sync()`` fsyncs.

Resume: a run resumed at global step ``s`` must show each step once in every reader. The
TensorBoard server's fast loader does not honour restart markers, so ``RunWriter(...,
resume_step=s)`` rewrites the run's event files, keeping only events at steps below ``s``,
each file replaced atomically, before it opens a new file that sorts after them.

Layout written (see DESIGN, Storage layout)::

    <sweep>/events.out.tfevents.0000000000.experiment   write_experiment: the HParams experiment
    <sweep>/<trial>/events.out.tfevents.<stamp>.<host>.<pid>   RunWriter: one file per writer
"""

from __future__ import annotations

import numbers
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class _NoTorchInThisThread:
    """A meta path finder that makes ``import torch`` fail in the thread that made it only:
    other threads importing torch meanwhile get it, and a torch already imported is taken
    from ``sys.modules`` before any finder is asked."""

    def __init__(self):
        self.thread = threading.get_ident()

    def find_spec(self, name, path=None, target=None):
        if name == "torch" and threading.get_ident() == self.thread:
            raise ModuleNotFoundError("torch is kept out of tensorboardX's import", name=name)


def _import_tensorboardx_without_torch() -> None:
    """Import the tensorboardX package without importing torch.

    tensorboardX's ``__init__`` imports torch when it is installed, for type hints only (its
    PyTorch helpers import torch themselves when called): about a second of every worker's
    start, for protos that need none of it. ``import torch`` fails in this thread for the
    duration of that one import (tensorboardX expects it may); nothing is remembered, so a
    later ``import torch`` works.
    """
    finder = _NoTorchInThisThread()
    sys.meta_path.insert(0, finder)
    try:
        import tensorboardX  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


# This module is imported only when a run or the experiment is written (``service.trial`` and
# ``service.driver`` import it then, not at their own import), so the finder above is in
# sys.meta_path for that one import of tensorboardX and importing ``service`` changes nothing.
_import_tensorboardx_without_torch()   # before the imports of its modules below

from google.protobuf import struct_pb2
from tensorboardX.proto import (api_pb2, attr_value_pb2, event_pb2, graph_pb2, node_def_pb2,
                                plugin_hparams_pb2, plugin_text_pb2, summary_pb2, tensor_pb2,
                                tensor_shape_pb2, types_pb2, versions_pb2)
from tensorboardX.record_writer import masked_crc32c
from tensorboardX.summary import make_histogram

from engine.atomic import fsync_dir
from service.storage import atomic_write_bytes, write_all

EVENT_FILE_PREFIX = "events.out.tfevents."
EXPERIMENT_FILE = EVENT_FILE_PREFIX + "0000000000.experiment"
HPARAMS_PLUGIN = "hparams"
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_TAG = "_hparams_/session_start_info"
SESSION_END_TAG = "_hparams_/session_end_info"
HPARAMS_STATUSES = ("UNKNOWN", "SUCCESS", "FAILURE", "RUNNING")
HISTOGRAM_BINS = 30

_FILE_VERSION = "brain.Event:2"
_STAMP = re.compile(r"tfevents\.(\d+)")
_HEADER = struct.Struct("<QI")   # record length, masked crc32c of the length
_CRC = struct.Struct("<I")       # masked crc32c of the data
# TensorBoard's own hparams summaries carry this empty tensor (older Rust data servers drop a
# summary value that has no value at all).
_NULL_TENSOR = tensor_pb2.TensorProto(
    dtype=types_pb2.DT_FLOAT,
    tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(
        size=0)]))
_DTYPES = {
    "float16": types_pb2.DT_HALF, "float32": types_pb2.DT_FLOAT, "float64": types_pb2.DT_DOUBLE,
    "int8": types_pb2.DT_INT8, "int16": types_pb2.DT_INT16, "int32": types_pb2.DT_INT32,
    "int64": types_pb2.DT_INT64, "uint8": types_pb2.DT_UINT8, "uint16": types_pb2.DT_UINT16,
    "bool": types_pb2.DT_BOOL, "complex64": types_pb2.DT_COMPLEX64,
    "object": types_pb2.DT_STRING,   # a summary node's output (engine.summary)
    "complex128": types_pb2.DT_COMPLEX128,
}


# ------------------------------------------------------------------ TFRecord framing

def encode_record(data: bytes) -> bytes:
    """One TFRecord: length, masked crc32c of the length, data, masked crc32c of the data."""
    length = struct.pack("<Q", len(data))
    crc = _CRC.pack
    return b"".join((length, crc(masked_crc32c(length)), data, crc(masked_crc32c(data))))


def read_records(data: bytes) -> tuple[list[tuple[bytes, bytes]], bool]:
    """Split a TFRecord file's bytes into ``(record, payload)`` pairs.

    Reading stops at the first truncated or damaged record, as TensorBoard's readers do;
    the flag says whether the whole of ``data`` was intact.
    """
    records, offset = [], 0
    while len(data) - offset >= _HEADER.size:
        length, length_crc = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length + _CRC.size
        if masked_crc32c(data[offset:offset + 8]) != length_crc or end > len(data):
            break
        payload = data[offset + _HEADER.size:end - _CRC.size]
        if masked_crc32c(payload) != _CRC.unpack_from(data, end - _CRC.size)[0]:
            break
        records.append((data[offset:end], payload))
        offset = end
    return records, offset == len(data)


def event_files(logdir: str | os.PathLike) -> list[Path]:
    """A run's event files in the order TensorBoard reads them (by name)."""
    try:
        names = os.listdir(logdir)
    except FileNotFoundError:
        return []
    return [Path(logdir, name) for name in sorted(names)
            if "tfevents" in name and os.path.isfile(os.path.join(logdir, name))]


# ------------------------------------------------------------------ resume: rewrite a run

def _is_hparams(value: summary_pb2.Summary.Value) -> bool:
    return value.metadata.plugin_data.plugin_name == HPARAMS_PLUGIN


def _kept_event(event: event_pb2.Event, resume_step: int) -> event_pb2.Event | None:
    """The part of ``event`` that survives a resume at ``resume_step``, or None.

    File versions and graphs are not points in time and stay; hparams session info is
    dropped whatever its step, so the resumed attempt writes it afresh; everything else
    stays only below the resume step.
    """
    if event.HasField("file_version") or event.HasField("graph_def"):
        return event
    if event.step >= resume_step:
        return None
    if event.HasField("summary"):
        values = [v for v in event.summary.value if not _is_hparams(v)]
        if len(values) != len(event.summary.value):
            if not values:
                return None
            kept = event_pb2.Event()
            kept.CopyFrom(event)
            del kept.summary.value[:]
            kept.summary.value.extend(values)
            return kept
    return event


def truncate_run(logdir: str | os.PathLike, resume_step: int) -> set[bytes]:
    """Rewrite a run's event files so only events at steps below ``resume_step`` remain.

    Each changed file is replaced atomically, a file left with nothing but its version
    record is removed, and a damaged tail (a writer killed mid-record) is cut off. Running
    it again changes nothing (idempotent), so a crash half-way is repaired by the next call.
    Returns the serialized GraphDefs the run still holds.
    """
    graphs: set[bytes] = set()
    removed = False
    for path in event_files(logdir):
        records, intact = read_records(path.read_bytes())
        kept, changed = [], not intact
        for record, payload in records:
            event = event_pb2.Event.FromString(payload)
            survivor = _kept_event(event, resume_step)
            if survivor is None:
                changed = True
                continue
            if survivor.HasField("graph_def"):
                graphs.add(survivor.graph_def)
            if survivor is not event:
                changed = True
                record = encode_record(survivor.SerializeToString())
            kept.append((record, survivor))
        if not changed:
            continue
        if all(event.HasField("file_version") for _, event in kept):
            path.unlink()
            removed = True
        else:
            atomic_write_bytes(path, b"".join(record for record, _ in kept))
    if removed:
        fsync_dir(logdir)
    return graphs


def _new_event_file(logdir: Path) -> tuple[int, Path]:
    """Create an event file whose name is unique and sorts after every existing one.

    The stamp in the name is the time in seconds, raised above every stamp already in the
    folder (two writers in one second, or a clock behind another node's): TensorBoard reads
    a run's files by name. O_EXCL settles a race between writers created at the same moment.
    """
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    while True:
        stamps = [int(m.group(1)) for m in map(_STAMP.search, os.listdir(logdir)) if m]
        stamp = max([int(time.time())] + [s + 1 for s in stamps])
        path = logdir / f"{EVENT_FILE_PREFIX}{stamp:010d}.{host}.{os.getpid()}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), path
        except FileExistsError:
            continue


# ------------------------------------------------------------------ summaries

def _plugin_metadata(plugin: str, content: bytes) -> summary_pb2.SummaryMetadata:
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=content))


# Why not ``tensorboardX.summary.hparams``: it builds the experiment, the session start and
# the session end in one call, so a run would get its end (and its status) at its start; its
# experiment knows only discrete domains (no intervals for uniform and loguniform), and it
# omits the group name and start time that keep a resumed run one row of the HParams table.
# The protos are tensorboardX's own; only the assembling is done here.
def _hparams_summary(tag: str, data: plugin_hparams_pb2.HParamsPluginData) -> summary_pb2.Summary:
    data.version = 0
    metadata = _plugin_metadata(HPARAMS_PLUGIN, data.SerializeToString())
    return summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=_NULL_TENSOR)])


def _hparam_value(value: Any) -> struct_pb2.Value:
    """A hyperparameter value as TensorBoard stores it: bool, number, or else its str()."""
    if isinstance(value, (bool, np.bool_)):
        return struct_pb2.Value(bool_value=bool(value))
    if isinstance(value, numbers.Real):
        return struct_pb2.Value(number_value=float(value))
    return struct_pb2.Value(string_value=value if isinstance(value, str) else str(value))


_DATA_TYPES = {"bool_value": api_pb2.DATA_TYPE_BOOL, "number_value": api_pb2.DATA_TYPE_FLOAT64,
               "string_value": api_pb2.DATA_TYPE_STRING}


def _hparam_info(name: str, domain: Sequence | tuple) -> api_pb2.HParamInfo:
    """A list is a discrete domain; a (min, max) tuple an interval."""
    if isinstance(domain, tuple):
        if (len(domain) != 2 or not all(isinstance(v, numbers.Real) for v in domain)
                or not domain[0] <= domain[1]):
            raise ValueError(f"hyperparameter {name!r}: an interval must be (min, max) with "
                             f"min <= max, got {domain!r}")
        return api_pb2.HParamInfo(
            name=name, type=api_pb2.DATA_TYPE_FLOAT64,
            domain_interval=api_pb2.Interval(min_value=domain[0], max_value=domain[1]))
    if not isinstance(domain, list) or not domain:
        raise ValueError(f"hyperparameter {name!r}: expected a non-empty list of values or a "
                         f"(min, max) tuple, got {domain!r}")
    values = [_hparam_value(v) for v in domain]
    kinds = {v.WhichOneof("kind") for v in values}
    info = api_pb2.HParamInfo(name=name, type=_DATA_TYPES[kinds.pop()] if len(kinds) == 1
                              else api_pb2.DATA_TYPE_UNSET)
    info.domain_discrete.values.extend(values)
    return info


def _shape_proto(node: str, shape: Sequence[int] | None) -> tensor_shape_pb2.TensorShapeProto:
    if shape is None:
        return tensor_shape_pb2.TensorShapeProto(unknown_rank=True)
    if not all(isinstance(d, numbers.Integral) and d >= -1 for d in shape):
        raise ValueError(f"graph node {node!r}: shape must be a list of ints (-1 for unknown) "
                         f"or None, got {shape!r}")
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape])


def graph_def_proto(graph: Mapping[str, Any]) -> graph_pb2.GraphDef:
    """TensorBoard's GraphDef for ``engine.graph_def`` output.

    ``graph`` is ``{"format": 1, "nodes": [{"name", "op", "inputs": [names], "dtype",
    "shape": [ints, -1 unknown] or None}]}``; each node gets ``dtype`` and ``_output_shapes``
    attributes, which TensorBoard's Graphs tab shows on the node and its edges.
    """
    if not isinstance(graph, Mapping) or graph.get("format") != 1:
        raise ValueError("graph_def: expected engine.graph_def output {'format': 1, 'nodes': "
                         f"[...]}}, got {str(graph)[:80]!r}")
    nodes = graph.get("nodes")
    if not isinstance(nodes, list):
        raise ValueError(f"graph_def: 'nodes' must be a list, got {type(nodes).__name__}")
    names = [node.get("name") if isinstance(node, Mapping) else None for node in nodes]
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ValueError(f"graph_def: node {index} has no name: {nodes[index]!r}")
        if name in seen:
            raise ValueError(f"graph_def: two nodes are named {name!r}")
        seen.add(name)
    proto = graph_pb2.GraphDef(versions=versions_pb2.VersionDef(producer=22))
    for node, name in zip(nodes, names):
        op, inputs, dtype = node.get("op"), node.get("inputs", []), node.get("dtype")
        if not isinstance(op, str) or not op:
            raise ValueError(f"graph node {name!r}: 'op' must be a non-empty string, got {op!r}")
        missing = [i for i in inputs if i not in seen]
        if isinstance(inputs, str) or missing:
            raise ValueError(f"graph node {name!r}: inputs {missing or inputs!r} are not nodes "
                             "of the graph")
        attr = {"_output_shapes": attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(
            shape=[_shape_proto(name, node.get("shape"))]))}
        if dtype is not None:
            if dtype not in _DTYPES:
                raise ValueError(f"graph node {name!r}: unknown dtype {dtype!r} (known: "
                                 f"{', '.join(_DTYPES)})")
            attr["dtype"] = attr_value_pb2.AttrValue(type=_DTYPES[dtype])
        proto.node.append(node_def_pb2.NodeDef(name=name, op=op, input=list(inputs), attr=attr))
    return proto


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    return int(step)


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"tag must be a non-empty string, got {tag!r}")
    return tag


# ------------------------------------------------------------------ the writer

class RunWriter:
    """Writes one TensorBoard run (a trial's folder): scalars, histograms, text, the graph and
    hparams session info, each event written at once.

    ``resume_step``: rewrite the run's existing event files first so that only events at
    steps below it remain (see ``truncate_run``), and drop earlier hparams session info.
    ``guard``: called before each write; it raises to fence a stale attempt.
    Every method raises ``OSError`` (e.g. ENOSPC) at once; the file keeps only whole events.
    """

    def __init__(self, logdir: str | os.PathLike, *, resume_step: int | None = None,
                 guard: Callable[[], None] | None = None) -> None:
        self.logdir = Path(logdir)
        self._guard = guard
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._offset = 0
        self._synced = -1          # the offset up to which the file was last fsynced
        self._dir_synced = False
        self._session_tags: set[str] = set()
        if guard is not None:
            guard()
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._graphs: set[bytes] = set()
        if resume_step is not None:
            self._graphs = truncate_run(self.logdir, _check_step(resume_step))
        fd, self.path = _new_event_file(self.logdir)
        self._fd = fd
        try:
            self._append(event_pb2.Event(wall_time=time.time(), file_version=_FILE_VERSION))
        except BaseException:
            os.close(fd)
            self._fd = None
            self.path.unlink(missing_ok=True)
            raise

    # -- writing

    def _append(self, event: event_pb2.Event) -> None:
        record = encode_record(event.SerializeToString())
        with self._lock:
            if self._fd is None:
                raise ValueError(f"RunWriter for {str(self.logdir)!r} is closed")
            try:
                write_all(self._fd, record)
            except BaseException:
                # Cut a partly written record so readers see whole events only.
                try:
                    os.ftruncate(self._fd, self._offset)
                    os.lseek(self._fd, self._offset, os.SEEK_SET)
                except OSError:
                    pass
                raise
            self._offset += len(record)

    def _write(self, step: int, **what: Any) -> None:
        if self._guard is not None:
            self._guard()
        self._append(event_pb2.Event(wall_time=time.time(), step=step, **what))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Scalars ``{tag: value}`` at ``step``, one event."""
        step = _check_step(step)
        if not isinstance(values, Mapping) or not values:
            raise ValueError(f"scalars at step {step}: expected a non-empty dict of "
                             f"tag -> number, got {values!r}")
        summary = summary_pb2.Summary()
        for tag, value in values.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"scalar {tag!r} at step {step}: {value!r} is not a "
                                 "number") from None
            summary.value.add(tag=_check_tag(tag), simple_value=number)
        self._write(step, summary=summary)

    def histogram(self, tag: str, values: Any, step: int) -> None:
        """A histogram of ``values`` (any shape) at ``step``; NaN and inf are left out, and an
        array with no finite value writes nothing (a diverged model has no shape to show)."""
        step, tag = _check_step(step), _check_tag(tag)
        flat = np.asarray(values, dtype=np.float64).ravel()
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            return
        histo = make_histogram(flat, HISTOGRAM_BINS)
        self._write(step, summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, histo=histo)]))

    def text(self, tag: str, text: str, step: int) -> None:
        """A text summary (the Text tab renders it as markdown) at ``step``."""
        step, tag = _check_step(step), _check_tag(tag)
        metadata = _plugin_metadata("text", plugin_text_pb2.TextPluginData(
            version=0).SerializeToString())
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                        string_val=[str(text).encode("utf-8")],
                                        tensor_shape=tensor_shape_pb2.TensorShapeProto())
        self._write(step, summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)]))

    def graph(self, graph_def: Mapping[str, Any]) -> None:
        """The run's graph from ``engine.graph_def`` output; written unless the run already
        holds the same graph (a resumed attempt logs it again)."""
        # deterministic: the attr maps' order would otherwise differ between processes
        data = graph_def_proto(graph_def).SerializeToString(deterministic=True)
        if data in self._graphs:
            return
        self._write(0, graph_def=data)
        self._graphs.add(data)

    def hparams_start(self, hparams: Mapping[str, Any], group_name: str,
                      start_time: float) -> None:
        """The hparams session start: this run's hyperparameter values (shown while running)."""
        info = plugin_hparams_pb2.SessionStartInfo(group_name=group_name,
                                                   start_time_secs=start_time)
        for name, value in hparams.items():
            info.hparams[_check_tag(name)].CopyFrom(_hparam_value(value))
        self._write_session(SESSION_START_TAG,
                            plugin_hparams_pb2.HParamsPluginData(session_start_info=info))

    def hparams_end(self, status: str, end_time: float) -> None:
        """The hparams session end, once, with ``status`` one of HPARAMS_STATUSES."""
        if status not in HPARAMS_STATUSES:
            raise ValueError(f"hparams status must be one of {', '.join(HPARAMS_STATUSES)}, "
                             f"got {status!r}")
        info = plugin_hparams_pb2.SessionEndInfo(status=api_pb2.Status.Value("STATUS_" + status),
                                                 end_time_secs=end_time)
        self._write_session(SESSION_END_TAG,
                            plugin_hparams_pb2.HParamsPluginData(session_end_info=info))

    def _write_session(self, tag: str, data: plugin_hparams_pb2.HParamsPluginData) -> None:
        if tag in self._session_tags:
            raise RuntimeError(f"{tag} was already written to run {str(self.logdir)!r}")
        self._write(0, summary=_hparams_summary(tag, data))
        self._session_tags.add(tag)

    # -- durability

    def sync(self) -> None:
        """Make everything written so far durable (fsync the file, and its folder once)."""
        with self._lock:
            if self._fd is None:
                raise ValueError(f"RunWriter for {str(self.logdir)!r} is closed")
            if self._synced != self._offset:   # nothing written since the last: no fsync
                os.fsync(self._fd)
                self._synced = self._offset
            if not self._dir_synced:
                fsync_dir(self.logdir)
                self._dir_synced = True

    def close(self) -> None:
        """sync() and close; closing twice is harmless."""
        if self._fd is None:
            return
        try:
            self.sync()
        finally:
            with self._lock:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ the sweep's experiment

def _first_wall_time(path: Path) -> float | None:
    try:
        records, _ = read_records(path.read_bytes())
    except FileNotFoundError:
        return None
    return event_pb2.Event.FromString(records[0][1]).wall_time if records else None


def write_experiment(sweep_dir: str | os.PathLike, hparams: Mapping[str, list | tuple],
                     metrics: Sequence[str]) -> Path:
    """Write the sweep root's HParams experiment: each hyperparameter's domain (a list: its
    discrete values; a (min, max) tuple: an interval) and the metric tags.

    One file under a fixed name, replaced atomically: a relaunch leaves one experiment, and
    an unchanged one keeps its creation time and bytes. Returns the file's path.
    """
    infos = [_hparam_info(_check_tag(name), domain) for name, domain in hparams.items()]
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics: expected a non-empty list of tags, got {metrics!r}")
    path = Path(sweep_dir) / EXPERIMENT_FILE
    created = _first_wall_time(path) or time.time()
    experiment = api_pb2.Experiment(
        name=Path(sweep_dir).resolve().name, time_created_secs=created, hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=_check_tag(tag)))
                      for tag in metrics])
    summary = _hparams_summary(EXPERIMENT_TAG,
                               plugin_hparams_pb2.HParamsPluginData(experiment=experiment))
    data = b"".join(encode_record(event.SerializeToString()) for event in (
        event_pb2.Event(wall_time=created, file_version=_FILE_VERSION),
        event_pb2.Event(wall_time=created, step=0, summary=summary)))
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    if not (path.exists() and path.read_bytes() == data):
        atomic_write_bytes(path, data)
    return path

