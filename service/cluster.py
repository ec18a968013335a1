"""Ray for a sweep: an embedded local Ray by default, or a cluster at a given address.

``address="local"`` always starts a private Ray inside the driver (bound to 127.0.0.1, no
dashboard, Ray's own log lines kept out of the terminal); it never joins another cluster that
happens to run on the machine. Any other address (or ``RAY_ADDRESS`` when no address is given)
joins that cluster. A Ray that the caller already started (a notebook, the test suite) is used
as it is and left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from service.storage import atomic_write_bytes

LOOPBACK = "127.0.0.1"
REACH_TIMEOUT = 10.0     # seconds to reach a cluster's address before giving up
DEFAULT_GCS_PORT = 6379


class ClusterError(RuntimeError):
    """A Ray cluster that cannot be used (an address nothing answers at)."""


@dataclass(frozen=True)
class ClusterInfo:
    """The Ray the driver runs on: how many CPUs it has and whether the driver started it."""

    address: str
    cpus: float
    embedded: bool
    owned: bool


def check_reachable(address: str) -> None:
    """Raise ClusterError within about REACH_TIMEOUT seconds when nothing answers at a
    cluster ``address`` (``host:port``, ``ray://host:port`` or ``auto``); ``ray.init`` itself
    would retry for minutes. ``local`` needs no check."""
    if address == "local":
        return
    target = address
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address
            target = canonicalize_bootstrap_address("auto")
        except (ImportError, AttributeError):   # pragma: no cover - Ray moved it: let Ray try
            return
        if not target:
            raise ClusterError("address 'auto': no Ray cluster runs on this machine (start one "
                               "with `ray start --head`, or run without --address for an "
                               "embedded local Ray)")
    host, _, port = target.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        host, port = target.split("://", 1)[-1], str(DEFAULT_GCS_PORT)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        shown = address if target == address else f"{address} ({target})"
        raise ClusterError(f"cannot reach the Ray cluster at {shown}: {reason}; check that "
                           f"`ray start --head` runs there, that port {port} is open from this "
                           "machine, or run without --address for an embedded local Ray") \
            from None


def resolve_address(address: str | None) -> str:
    """``None`` means ``RAY_ADDRESS`` when set, else ``"local"``; anything else is kept."""
    if address is None:
        return os.environ.get("RAY_ADDRESS") or "local"
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"address must be 'local' or a Ray cluster address, got {address!r}")
    return address


@contextlib.contextmanager
def connect(address: str | None = "local", *, num_cpus: int | None = None
            ) -> Iterator[ClusterInfo]:
    """Start or join Ray for the duration of the block; shut it down after if started here.

    ``num_cpus`` caps an embedded Ray's CPUs (default: all of the machine's).
    """
    import ray

    if ray.is_initialized():
        yield ClusterInfo("existing", cluster_cpus(), embedded=_started_here_alone(),
                          owned=False)
        return
    address = resolve_address(address)
    check_reachable(address)
    options = dict(include_dashboard=False, log_to_driver=False,
                   logging_level=logging.ERROR)
    embedded = address == "local"
    if embedded:
        options.update(address="local", num_cpus=num_cpus, _node_ip_address=LOOPBACK)
        with _loopback_node_ip():
            ray.init(**options)
    else:
        ray.init(address=address, **options)
    try:
        yield ClusterInfo(address, cluster_cpus(), embedded=embedded, owned=True)
    finally:
        ray.shutdown()


def _started_here_alone() -> bool:
    """Whether the Ray this process already uses is a one-node Ray that it started itself
    (``ray.init()`` without an address, as a notebook or a test suite does): that node runs
    on this machine, started by this process, so it sees the files the driver sees."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return bool(getattr(node, "head", False)) and \
        sum(1 for n in ray.nodes() if n.get("Alive")) == 1


@contextlib.contextmanager
def _loopback_node_ip():
    """Keep an embedded Ray on 127.0.0.1.

    Ray turns a loopback ``_node_ip_address`` into the machine's routable address (so other
    nodes could join) unless its multi-node support is off; with it off for the start-up,
    every Ray process of the embedded instance listens on 127.0.0.1 only.
    """
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - private module moved: fall back to Ray's choice
        yield
        return
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def cluster_cpus() -> float:
    """The CPUs of the Ray cluster the driver is connected to."""
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


def actor_options(resources: dict[str, float]) -> dict:
    """Ray actor options for a spec's per-trial ``resources`` (``{"cpu": 1, "gpu": 0, ...}``):
    cpu, gpu and memory map to Ray's own keywords, other names to custom resources."""
    options: dict = {"num_cpus": float(resources.get("cpu", 1.0))}
    custom = {}
    for name, amount in resources.items():
        if name == "cpu":
            continue
        if name == "gpu":
            options["num_gpus"] = float(amount)
        elif name == "memory":
            options["memory"] = float(amount)
        else:
            custom[name] = float(amount)
    if custom:
        options["resources"] = custom
    return options


def unplaceable(resources: dict[str, float]) -> str | None:
    """Why no node of the connected cluster can run one trial with ``resources``, or None."""
    import ray

    wanted = {"CPU": float(resources.get("cpu", 1.0)), "GPU": float(resources.get("gpu", 0.0)),
              "memory": float(resources.get("memory", 0.0))}
    wanted.update({k: float(v) for k, v in resources.items() if k not in ("cpu", "gpu", "memory")})
    wanted = {k: v for k, v in wanted.items() if v > 0}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(k, 0.0) >= v for k, v in wanted.items()) for node in nodes):
        return None
    largest = {k: max((node.get(k, 0.0) for node in nodes), default=0.0) for k in wanted}
    short = [f"{k.lower()} {v:g} (the largest node has {largest[k]:g})"
             for k, v in wanted.items() if largest[k] < v]
    return "no node of the cluster can run a trial: it asks for " + ", ".join(
        short or [f"{k.lower()} {v:g}" for k, v in wanted.items()] + ["on one node"])


def nodes_not_seeing(folder: Path, timeout: float = 60.0) -> list[str]:
    """The alive nodes of the connected cluster that cannot use ``folder`` (the sweep's, on
    storage every node must share): each reads back a token the driver wrote there, in a tiny
    task pinned to it. One ``"node <id> (<address>): <why>"`` per node that cannot."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    path = Path(folder) / f".storage-check-{token}"
    atomic_write_bytes(path, token.encode())
    try:
        read = ray.remote(num_cpus=0, max_retries=0)(_read_token)
        nodes = {}
        for node in ray.nodes():
            if node.get("Alive"):
                pinned = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                nodes[read.options(scheduling_strategy=pinned).remote(str(path))] = node
        answered, _ = ray.wait(list(nodes), num_returns=len(nodes), timeout=timeout)
        problems = []
        for ref, node in nodes.items():
            where = f"node {node['NodeID'][:12]} ({node.get('NodeManagerAddress', '?')})"
            try:
                seen = ray.get(ref) if ref in answered else f"no answer within {timeout:g} s"
            except ray.exceptions.RayError as err:
                seen = f"the check failed there: {type(err).__name__}"
            if seen != token:
                problems.append(f"{where}: {seen}")
        return problems
    finally:
        path.unlink(missing_ok=True)


def _read_token(path: str) -> str:
    """On a node: the token file's content, or why it cannot be read there."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        return f"cannot read {path}: {err.strerror}"


def default_concurrency(cpus_in_cluster: float, resources: dict[str, float]) -> int:
    """DESIGN's default ``max_concurrent``: the cluster's CPUs / CPUs per trial, at least 1."""
    per_trial = float(resources.get("cpu", 1.0))
    return max(1, int(cpus_in_cluster // per_trial)) if per_trial > 0 else 1
