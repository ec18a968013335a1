"""gradsweep on a real multi-node Ray cluster started by the test (``raycluster.Cluster``: a
1-CPU head plus 1-CPU worker nodes joined with ``ray start --address``, each started from its
own working folder with a clean PYTHONPATH, all on 127.0.0.1), drivers run by the command
line: trials spread over the nodes end exactly as on one node; a node SIGKILLed mid-sweep has
its trials resumed from their checkpoints on the node left; and a node that cannot see the
storage folder makes the driver refuse before any trial starts.
"""

import os
import subprocess
from pathlib import Path

import pytest

from service.storage import SweepState
from tests import drivers
from tests.drivers import running
from tests.reliability.helpers import (Control, calls, copy_sweep, each_step_once, listing,
                                       outcome, running_pid, state_of, trial_ids, wait_for)
from tests.reliability.raycluster import Cluster

TIMEOUT = 180


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(head_cpus=1)
    try:
        yield cluster
    finally:
        cluster.close()


def start_driver(cluster, args, cwd, *, via_env=False):
    """``python -m service ARGS`` joining ``cluster`` (by ``--address`` or ``RAY_ADDRESS``)."""
    env = cluster.env()
    if via_env:
        env["RAY_ADDRESS"] = cluster.address
    else:
        args = [*args, "--address", cluster.address]
    return drivers.start_driver(args, cwd, env)


def finish(driver):
    try:
        out, err = driver.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        driver.kill()
        out, err = driver.communicate()
        raise AssertionError(f"the driver hung:\n{err[-3000:]}") from None
    return driver.returncode, out, err


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


def test_trials_spread_over_two_nodes_end_as_on_one(cluster, reference, tmp_path):
    node = cluster.add_node("node2")
    try:
        path = copy_sweep(tmp_path / "sweepfiles")
        ids = trial_ids(path)
        for trial in ids[:2]:
            Control(path, trial).arm("pause", 24)
        # A relative storage path: the driver makes it absolute for workers in other folders.
        driver = start_driver(cluster, ["launch", str(path), "--storage", "logs",
                                        "--max-concurrent", "2"], cwd=tmp_path)
        sweep_dir = tmp_path / "logs" / "faults"
        pids = {t: Control(path, t).wait_paused(timeout=TIMEOUT, alive=running(driver))["pid"]
                for t in ids[:2]}
        # One trial runs on the joined node, in its folder, without the driver's PYTHONPATH:
        # train came by value, not from the sweep file on disk.
        remote = [t for t, pid in pids.items() if node.runs(pid)]
        assert len(remote) == 1
        pid = pids[remote[0]]
        assert os.readlink(f"/proc/{pid}/cwd") == str(node.cwd)
        assert "PYTHONPATH" not in environ(pid) and not (node.cwd / "faults.py").exists()
        for trial in ids[:2]:
            Control(path, trial).resume()
        status, out, err = finish(driver)
        assert status == 0, err
    finally:
        if driver.poll() is None:
            driver.kill()
        node.kill()
    state = SweepState.load(sweep_dir / "state.json")
    nodes = {a.node for t in state.trials for a in t.attempts}
    assert nodes == {cluster.nodes["head"].id, node.id}            # both nodes ran trials
    for trial in ids:
        assert each_step_once(sweep_dir, trial) == [], trial
        assert outcome(sweep_dir, trial) == reference[trial], trial   # as on one node


def test_a_node_killed_mid_sweep_has_its_trials_resumed_on_the_node_left(cluster, reference,
                                                                        tmp_path):
    node = cluster.add_node("doomed")
    path = copy_sweep(tmp_path / "sweepfiles")
    ids = trial_ids(path)
    for trial in ids[:2]:
        Control(path, trial).arm("pause", 24)
    storage = tmp_path / "logs"
    sweep_dir = storage / "faults"
    driver = start_driver(cluster, ["launch", str(path), "--storage", str(storage),
                                    "--max-concurrent", "2"], cwd=tmp_path, via_env=True)
    try:
        pids = {t: Control(path, t).wait_paused(timeout=TIMEOUT, alive=running(driver))["pid"]
                for t in ids[:2]}
        (lost,) = [t for t, pid in pids.items() if node.runs(pid)]
        (kept,) = [t for t in ids[:2] if t != lost]
        wait_for(lambda: running_pid(sweep_dir, lost) == pids[lost], alive=running(driver))
        before = SweepState.load(sweep_dir / "state.json").by_id()
        assert before[lost].attempts[-1].node == node.id
    except BaseException:
        driver.kill()
        node.kill()
        raise
    node.kill()                          # the machine dies: raylet, workers, everything
    try:
        # The driver learns of the death (Ray's health checks) while the head's worker is
        # still busy and trials still wait: the retry needs a worker the cluster can hold.
        wait_for(lambda: state_of(sweep_dir)[lost].attempts[0].outcome == "worker-died",
                 timeout=60, alive=running(driver), what="the driver to notice the death")
    finally:
        Control(path, kept).resume()
    status, out, err = finish(driver)
    assert status == 0, err
    state = SweepState.load(sweep_dir / "state.json").by_id()
    record = state[lost]
    assert [a.outcome for a in record.attempts] == ["worker-died", "finished"]
    assert record.attempts[0].node == node.id != record.attempts[1].node
    assert calls(path)[lost] == [0, 20]                       # from its ckpt-20
    assert {a.node for t in state.values() for a in t.attempts[1:]} <= \
        {cluster.nodes["head"].id}                            # what ran after: on the head
    for trial in ids:
        assert each_step_once(sweep_dir, trial) == [], trial
        assert outcome(sweep_dir, trial) == reference[trial], trial


def mount_namespace() -> list[str]:
    """``unshare`` options giving a private mount namespace where tmpfs can be mounted: as
    root directly, otherwise inside a user namespace (where one maps to root)."""
    options = ["--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        options = ["--user", "--map-root-user", *options]
    probe = subprocess.run(["unshare", *options, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine gives no private mount namespace: {probe.stderr.strip()}")
    return options


def test_storage_a_node_cannot_see_is_refused_before_any_trial_starts(cluster, tmp_path):
    namespace = mount_namespace()
    path = copy_sweep(tmp_path / "sweepfiles")
    storage = tmp_path / "logs"
    storage.mkdir()

    def blind(command):
        # The node's processes see an empty file system over the storage folder: the
        # folder exists there, as a local folder would where the shared one is not mounted.
        return ["unshare", *namespace, "sh", "-c",
                f"mount -t tmpfs -o size=1m gradsweep-not-shared '{storage}' && exec \"$@\"",
                "sh", *command]

    node = cluster.add_node("blind", wrap=blind)
    try:
        before = listing(tmp_path, skip=("sweepfiles/__pycache__",))
        driver = start_driver(cluster, ["launch", str(path), "--storage", str(storage)],
                              cwd=tmp_path)
        status, out, err = finish(driver)
    finally:
        node.kill()
    assert status == 2, err
    assert "Traceback" not in err
    (message,) = [line for line in err.splitlines() if "error:" in line]
    assert f"storage {str(storage)!r} is not visible from every node" in message
    assert f"node {node.id[:12]} (127.0.0.1): cannot read {storage}/faults/.storage-check-" \
        in message and "No such file or directory" in message
    assert cluster.nodes["head"].id[:12] not in message        # the head sees it
    assert not (path.parent / "calls").exists()                # no trial started
    assert listing(tmp_path, skip=("sweepfiles/__pycache__",)) == before   # nothing left
