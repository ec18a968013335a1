"""Read TensorBoard runs with TensorBoard's own code, for tests.

Two views of a run folder, both from the ``tensorboard`` package (never from our writer):

- ``written_points(run_dir)``: every scalar point exactly as stored, file by file in the
  order TensorBoard reads them, duplicates included (``RawEventFileLoader`` + TensorBoard's
  ``Event`` proto). The strictest check: a step twice here is a step twice on disk.
- ``load_run(run_dir)``: TensorBoard's Python ``EventAccumulator`` (the legacy loader),
  keeping every sample. ``scalar_points``, ``hparams_data`` and friends read from it.

And the real server: ``TensorBoardServer(logdir, load_fast=...)`` starts ``tensorboard`` on a
free 127.0.0.1 port (its Rust data server with the default ``load_fast="auto"``, the Python
loader with ``"false"``), waits until it serves, queries its HTTP data API, and always kills
its whole process group on exit::

    with TensorBoardServer(tmp_path) as tb:
        points = tb.settled(lambda: tb.scalars("trial", "loss"))   # [(step, value), ...]
"""

from __future__ import annotations

import os
import time
import urllib.error
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tensorboard.backend.event_processing import event_accumulator, event_file_loader
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

import scripts.tensorboard_server

T = TypeVar("T")

# Keep every sample of every kind (0 = no limit in EventAccumulator's size guidance).
_KEEP_ALL = {kind: 0 for kind in (event_accumulator.SCALARS, event_accumulator.HISTOGRAMS,
                                  event_accumulator.TENSORS, event_accumulator.GRAPH,
                                  event_accumulator.COMPRESSED_HISTOGRAMS)}


# ------------------------------------------------------------------ files, as stored

def event_files(run_dir: str | os.PathLike) -> list[Path]:
    """The run's event files (any name containing "tfevents"), in the order TensorBoard
    reads them: sorted by name."""
    return sorted(p for p in Path(run_dir).iterdir() if "tfevents" in p.name and p.is_file())


def raw_events(run_dir: str | os.PathLike) -> list[event_pb2.Event]:
    """Every event of the run, file by file, as TensorBoard's raw record reader sees it."""
    events = []
    for path in event_files(run_dir):
        for record in event_file_loader.RawEventFileLoader(str(path)).Load():
            events.append(event_pb2.Event.FromString(record))
    return events


def written_points(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` for every ``simple_value`` scalar as stored, in read
    order, duplicates included."""
    points: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for event in raw_events(run_dir):
        for value in event.summary.value:
            if value.WhichOneof("value") == "simple_value":
                points[value.tag].append((event.step, value.simple_value))
    return dict(points)


# ------------------------------------------------------------------ TensorBoard's Python loader

def load_run(run_dir: str | os.PathLike) -> event_accumulator.EventAccumulator:
    """TensorBoard's ``EventAccumulator`` over ``run_dir``, loaded, keeping every sample."""
    accumulator = event_accumulator.EventAccumulator(str(run_dir), size_guidance=_KEEP_ALL)
    accumulator.Reload()
    return accumulator


def scalar_points(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as the ``EventAccumulator`` shows them."""
    accumulator = load_run(run_dir)
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()[event_accumulator.SCALARS]}


def hparams_data(run_dir: str | os.PathLike) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    """``{tag: HParamsPluginData}`` of the hparams plugin summaries in a run (the experiment
    at a sweep's root; session start/end info in a trial's run), parsed with TensorBoard's
    own proto. Empty when the run has none."""
    accumulator = load_run(run_dir)
    try:
        contents = accumulator.PluginTagToContent("hparams")
    except KeyError:
        return {}
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(content)
            for tag, content in contents.items()}


def struct_value(value: Any) -> Any:
    """A ``google.protobuf.Value`` (how hparams are stored) as a Python value."""
    return getattr(value, value.WhichOneof("kind"))


def hparam_values(info: Any) -> dict[str, Any]:
    """A SessionStartInfo's ``{name: python value}``."""
    return {name: struct_value(value) for name, value in info.hparams.items()}


# ------------------------------------------------------------------ the tensorboard server

class TensorBoardServer(scripts.tensorboard_server.TensorBoardServer):
    """A real ``tensorboard`` process serving ``logdir`` on 127.0.0.1, for tests.

    ``load_fast``: "auto" (TensorBoard's default: the Rust data server when installed),
    "true" (that one or fail) or "false" (the Python loader). Data is loaded once
    (``--reload_interval 0``) with no downsampling of scalars or histograms. Use as a
    context manager: on exit the server's process group (TensorBoard and its data server)
    is terminated, then killed, and reaped. ``start_timeout``: seconds to wait for the
    "TensorBoard ... at http://..." line.
    """

    def __init__(self, logdir: str | os.PathLike, *, load_fast: str = "auto",
                 start_timeout: float = 30.0, extra_args: tuple[str, ...] = ()) -> None:
        args = ["--reload_interval", "0",
                "--samples_per_plugin", "scalars=100000,histograms=100000",
                "--load_fast", load_fast]
        if load_fast == "false":
            args += ["--reload_task", "blocking"]    # serve only once everything is loaded
        super().__init__(logdir, args=[*args, *extra_args], start_timeout=start_timeout)
        self.load_fast = load_fast

    def processes(self) -> list[tuple[int, str]]:
        """The live processes of this server's group: ``[(pid, command line)]``."""
        return self.group_processes(self.pgid) if self.pgid is not None else []

    @staticmethod
    def group_processes(pgid: int) -> list[tuple[int, str]]:
        """Live (not zombie) processes in process group ``pgid``, from /proc."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path("/proc", entry, "stat").read_text()
                state, _, group = stat[stat.rindex(")") + 2:].split()[:3]
                if int(group) == pgid and state != "Z":
                    cmdline = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ")
                    found.append((int(entry), cmdline.decode(errors="replace")))
            except (OSError, ValueError):
                continue    # the process ended while we looked
        return found

    def scalars(self, run: str, tag: str) -> list[tuple[int, float]]:
        """A run's scalar points ``[(step, value), ...]`` as the server returns them (empty
        while the run or tag is not loaded yet)."""
        try:
            points = self.get_json("/data/plugin/scalars/scalars", run=run, tag=tag)
        except urllib.error.HTTPError as err:
            if err.code in (400, 404):
                return []
            raise
        return [(int(step), value) for _, step, value in points]

    def settled(self, fetch: Callable[[], T], timeout: float = 20.0,
                interval: float = 0.3) -> T:
        """Poll ``fetch()`` until it returns the same non-empty answer twice in a row (the
        server loads in the background) and return it; raise after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        previous = None
        while True:
            current = fetch()
            if current and current == previous:
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(f"no settled answer from tensorboard within {timeout} s; "
                                   f"last: {str(current)[:300]}\n{self.stderr[-2000:]}")
            previous = current
            time.sleep(interval)
