"""Submitting a sweep from a laptop: ``ray job submit`` to a cluster's dashboard.

The test starts a one-node cluster with ``ray start --head`` and its dashboard (the job
server), all on 127.0.0.1, in a temp folder of its own; submits ``sweeps/submitted.py`` with
``ray job submit --no-wait --working-dir`` (the file is uploaded: the driver runs on the
cluster, from Ray's copy of the folder); checks that the sweep is still running after the
submitting command has exited; waits for the job; and reads the sweep back from storage.

Everything runs in subprocesses or over HTTP (the job client): the test never starts or
joins Ray in the pytest process, so the session's own embedded Ray is left alone. The
cluster is torn down by the pids the test started (never a machine-wide ``ray stop``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

import service
from service.messages import TrialState
from tests.reliability.helpers import SWEEPS, kill_tree
from tests.reliability.raycluster import RAY_START, free_port

# The `ray` command, run by this Python (the venv's `ray` need not be on PATH).
RAY = ("import sys\n"
       "from ray.scripts.scripts import main\n"
       "sys.argv[0] = 'ray'\n"
       "main()\n")

TIMEOUT = 120          # seconds for any one thing the test waits for
GATE = "GRADSWEEP_TEST_GATE"   # sweeps/submitted.py


class Head:
    """``ray start --head --block`` with its dashboard, on 127.0.0.1, in a temp folder."""

    def __init__(self, cpus: int = 2):
        # Short: Ray's unix sockets live under it (their paths are limited to 107 bytes).
        self.base = Path(tempfile.mkdtemp(prefix="gsjob-", dir="/tmp"))
        self.port, self.dashboard_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.dashboard_port}"
        self.log = self.base / "head.log"
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        # Ray's multi-node support off: every process of the node (the dashboard's agent,
        # the job's supervisor and driver) keeps 127.0.0.1 instead of swapping it for the
        # machine's routable address, where nothing listens. The dashboard's own metrics
        # port is fixed by default: a free one, so two heads on the machine do not collide.
        self.env = {**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                    "DASHBOARD_METRIC_PORT": str(free_port())}
        command = [sys.executable, "-c", RAY_START, "start", "--head",
                   "--node-ip-address=127.0.0.1", f"--port={self.port}",
                   f"--num-cpus={cpus}", f"--temp-dir={self.base / 'head'}",
                   "--disable-usage-stats", "--include-dashboard=true",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                   f"--dashboard-agent-listen-port={free_port()}",
                   f"--ray-client-server-port={free_port()}", "--block"]
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(command, cwd=self.base, env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait(lambda: "Ray runtime started" in self.log.read_text(), "Ray to start")
            self._wait(self._dashboard_answers, "the dashboard to answer")
        except BaseException:
            self.close()
            raise

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"waiting for {what}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def _dashboard_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/version", timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    def ray(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        """``ray ARGS`` as run on a laptop (it reaches the cluster only over HTTP)."""
        return subprocess.run([sys.executable, "-c", RAY, *args], check=False, env=self.env,
                              cwd=self.base, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)

    def close(self) -> None:
        """SIGKILL the node and all it started (raylet, dashboard, the job and its workers)."""
        kill_tree(self.process.pid)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def head():
    head = Head(cpus=2)
    try:
        yield head
    finally:
        head.close()


def wait_for(predicate, what: str, alive=None):
    deadline = time.monotonic() + TIMEOUT
    while not (found := predicate()):
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return found


def test_a_sweep_submitted_as_a_ray_job_runs_on_without_its_submitter(head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    workdir = tmp_path / "sweepfiles"          # what the laptop uploads: the sweep file alone
    workdir.mkdir()
    shutil.copy(SWEEPS / "submitted.py", workdir / "submitted.py")
    storage = tmp_path / "logs"                # shared storage, as every node mounts it
    gate = tmp_path / "gate" / "open"
    gate.parent.mkdir()
    job_id = f"gradsweep-{uuid.uuid4().hex[:8]}"

    submitted = head.ray(
        "job", "submit", "--address", head.url, "--submission-id", job_id, "--no-wait",
        "--working-dir", str(workdir),
        "--runtime-env-json", json.dumps({"env_vars": {GATE: str(gate)}}),
        "--", sys.executable, "-m", "service", "launch", "submitted.py",
        "--storage", str(storage), "--address", "auto")
    assert submitted.returncode == 0, submitted.stderr[-3000:]

    client = JobSubmissionClient(head.url)

    def logs() -> str:
        return client.get_job_logs(job_id)[-3000:]

    def not_ended():
        status = client.get_job_status(job_id)
        if status.is_terminal():
            raise AssertionError(f"the job ended ({status}) too early:\n{logs()}")

    # The submitting command has exited; the trials are running on the cluster.
    wait_for(lambda: list(gate.parent.glob("waiting-*")), "a trial to start", alive=not_ended)
    status = head.ray("job", "status", "--address", head.url, job_id)
    assert status.returncode == 0 and "RUNNING" in status.stdout + status.stderr, \
        status.stdout + status.stderr
    gate.touch()

    ended = wait_for(lambda: (s := client.get_job_status(job_id)).is_terminal() and s,
                     "the job to end")
    assert ended == JobStatus.SUCCEEDED, logs()

    # The driver ran on the cluster, from Ray's copy of the uploaded folder.
    info = client.get_job_info(job_id)
    sweep_dir = storage / "submitted"
    source = json.loads((sweep_dir / "sweep.json").read_text())["source_file"]
    assert Path(source).name == "submitted.py" and Path(source).is_relative_to(head.base)
    printed = head.ray("job", "logs", "--address", head.url, job_id)
    assert printed.returncode == 0, printed.stderr[-3000:]

    result = service.load(sweep_dir)
    assert [t.id for t in result.trials] == ["0_lr=0.01", "1_lr=0.1", "2_lr=0.5"]
    for trial in result.trials:
        assert trial.state == TrialState.TERMINATED, trial.id
        assert result.paths.trial(trial.id).result_json.is_file(), trial.id
        assert [a.outcome for a in trial.attempts] == ["finished"], trial.id
        assert {a.node for a in trial.attempts} == {info.driver_node_id}, trial.id
        assert trial.last_step == 29, trial.id
        line = next(line for line in printed.stdout.splitlines() if line.startswith(trial.id))
        assert "TERMINATED" in line, printed.stdout           # the driver's closing table
    # The largest learning rate gets nearest the noise floor (0.01) in 30 steps.
    assert [t.config["lr"] for t in result.ranked()] == [0.5, 0.1, 0.01]
    best = result.best()
    assert best.trial == "2_lr=0.5" and best.config == {"lr": 0.5} and best.step == 29
    assert 0.005 < best.value < 0.015
    assert best.checkpoint is not None and best.checkpoint.endswith("ckpt-30")
