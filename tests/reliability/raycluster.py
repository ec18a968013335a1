"""A real multi-node Ray cluster on this machine, for tests: ``ray start`` processes bound to
127.0.0.1, each node with its own temp folder, working folder and environment, torn down by
the pids this module started (never a machine-wide ``ray stop``, which would take other Ray
instances with it).

Ray swaps a loopback ``--node-ip-address`` for the machine's routable address, so its
servers would listen on every interface; the nodes here are started through Ray's own
command with that swap turned off, and drivers run with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
so that they too keep 127.0.0.1 (joining nodes still needs the default, hence the wrapper).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.reliability.helpers import descendants, kill_tree, process_alive

# `ray start ...` with 127.0.0.1 kept as the node's address.
RAY_START = ("import sys\n"
             "import ray._private.services as services\n"
             "services.resolve_ip_for_localhost = lambda host: host\n"
             "from ray.scripts.scripts import main\n"
             "sys.argv[0] = 'ray'\n"
             "main()\n")

# Notice a dead node in about two seconds instead of about a minute.
HEALTH_CHECKS = {"RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
                 "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}

PROBE = ("import json, logging, sys, ray\n"
         "ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)\n"
         "print(json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], "
         "'socket': n.get('RayletSocketName', '')} for n in ray.nodes()]))\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    cwd: Path
    log: Path
    id: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def runs(self, pid: int) -> bool:
        """True when ``pid`` is one of this node's processes (a worker, say)."""
        return pid in descendants(self.pid)

    def kill(self) -> None:
        """SIGKILL the whole node at once, as a machine that dies (raylet, workers, agents)."""
        kill_tree(self.pid)
        self.process.wait(30)


class Cluster:
    """A head node started on creation; ``add_node`` joins more; ``close`` removes all."""

    def __init__(self, head_cpus: int = 1):
        # Short: Ray's unix sockets live under it (their paths are limited to 107 bytes).
        self.base = Path(tempfile.mkdtemp(prefix="gsray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, Node] = {}
        try:
            self._start("head", ["--head", f"--port={self.port}", f"--num-cpus={head_cpus}",
                                 "--include-dashboard=false", f"--dashboard-port={free_port()}",
                                 f"--ray-client-server-port={free_port()}"],
                        env=self.env(node=True), wrap=None)
            self.wait_for_nodes(1)
        except BaseException:
            self.close()
            raise

    def env(self, *, node: bool = False, clean_pythonpath: bool = False) -> dict[str, str]:
        """The environment of a node (``node``) or of a driver joining this cluster."""
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        if node:
            env.update(HEALTH_CHECKS)
        else:
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # keep 127.0.0.1 (see above)
        if clean_pythonpath:
            env.pop("PYTHONPATH", None)
        return env

    def _start(self, name: str, args: list[str], env: dict, wrap) -> Node:
        cwd = self.base / f"{name}-cwd"
        cwd.mkdir()
        log = self.base / f"{name}.log"
        command = [sys.executable, "-c", RAY_START, "start", "--node-ip-address=127.0.0.1",
                   f"--temp-dir={self.base / name}", "--disable-usage-stats",
                   f"--dashboard-agent-listen-port={free_port()}", *args, "--block"]
        if wrap is not None:
            command = wrap(command)
        with open(log, "w") as out:
            process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        node = self.nodes[name] = Node(name, process, cwd, log)
        deadline = time.monotonic() + 60
        while "Ray runtime started" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        return node

    def add_node(self, name: str, cpus: int = 1, *, wrap=None) -> Node:
        """Join a node with ``cpus`` CPUs, started in its own working folder with a clean
        PYTHONPATH (it cannot import a sweep file from disk). ``wrap(command)`` returns the
        command to run instead (e.g. in another mount namespace)."""
        node = self._start(name, [f"--address={self.address}", f"--num-cpus={cpus}"],
                           env=self.env(node=True, clean_pythonpath=True), wrap=wrap)
        deadline = time.monotonic() + 60
        while not any(n["id"] == node.id for n in self.alive_nodes()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} never joined:\n{node.log.read_text()}")
            time.sleep(0.5)
        return node

    def alive_nodes(self) -> list[dict]:
        """``[{"id", "alive", "socket"}]`` of the cluster's alive nodes, asked of Ray."""
        done = subprocess.run([sys.executable, "-c", PROBE, self.address], env=self.env(),
                              cwd=self.base, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"cannot ask the cluster for its nodes:\n{done.stderr[-3000:]}")
        nodes = [n for n in json.loads(done.stdout.strip().splitlines()[-1]) if n["alive"]]
        for node in self.nodes.values():   # name our nodes by their temp folders
            for found in nodes:
                if found["socket"].startswith(str(self.base / node.name) + os.sep):
                    node.id = found["id"]
        return nodes

    def wait_for_nodes(self, count: int, timeout: float = 60.0) -> None:
        """Wait until exactly ``count`` nodes are alive (a killed one is declared dead once
        its health checks fail)."""
        deadline = time.monotonic() + timeout
        while len(self.alive_nodes()) != count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster never had {count} alive nodes")
            time.sleep(0.5)

    def close(self) -> None:
        """Kill every node this cluster started (workers, agents and all), then its files."""
        for node in reversed(list(self.nodes.values())):
            if process_alive(node.pid) or node.process.poll() is None:
                kill_tree(node.pid)
            try:
                node.process.wait(30)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.base, ignore_errors=True)
