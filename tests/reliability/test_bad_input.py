"""Bad input, table-driven: malformed sweep files, bad command lines, unusable storage, names
that are not folder names, damaged or crafted sweep folders. Every case must be refused with
exit status 2 (or, from the Python API, a clear exception), no traceback, one message naming
the thing at fault, and nothing written or changed on storage (a listing of every file with
its sha256, before and after).

The command-line cases run ``python -m service`` in a subprocess whose working folder is the
case's temporary folder. One needs the cluster's answer (resources no node has) and starts an
embedded Ray; the others are refused before Ray starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import engine as en
from engine.checkpoint.files import _seal
from service import load
from tests.reliability.helpers import listing

HEADER = "from service import Sweep, grid, loguniform, randint\n\n\ndef train(config, trial):\n" \
         "    pass\n\n\n"
GOOD = "sweep = Sweep(name='s', train=train, space={'lr': grid([0.1, 0.2])}, metric='loss')\n"


def good(options: str = "") -> str:
    """The good sweep's line, with more keyword arguments."""
    return GOOD.replace("metric='loss')", f"metric='loss'{', ' + options if options else ''})")


def sweep_file(text: str) -> Callable[[Path], None]:
    """Setup: ``bad.py`` with ``text`` in the case's folder."""
    return lambda tmp: (tmp / "bad.py").write_text(text)


def with_options(options: str) -> Callable[[Path], None]:
    """Setup: ``bad.py``, a good sweep but for ``options`` (Python keyword arguments)."""
    return sweep_file(HEADER + good(options))


def good_file(tmp: Path) -> None:
    (tmp / "good.py").write_text(HEADER + good())


@dataclass
class Case:
    """One bad input: the command line (``{tmp}`` is the case's folder), what prepares the
    folder, and the text the one error message must contain."""

    id: str
    args: list[str]
    culprit: str
    setup: Callable[[Path], None] = good_file


# ----------------------------------------------------------------- sweep folders

def finished_copy(tmp: Path, reference_run) -> Path:
    """A copy of the reference sweep's finished folder, in ``tmp/logs``."""
    shutil.copytree(reference_run.root, tmp / "logs" / reference_run.root.name)
    return tmp / "logs" / reference_run.root.name


def corrupt(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


def state_with_trial_id(trial_id: str) -> Callable[[Path], None]:
    """The best trial of state.json renamed ``trial_id`` (a hand-edited or crafted file)."""
    def setup(folder: Path) -> None:
        state = json.loads((folder / "state.json").read_text())
        best = min(state["trials"], key=lambda t: t["last_metrics"]["loss/full"])
        best["id"] = trial_id
        (folder / "state.json").write_text(json.dumps(state))
    return setup


def sweep_file_gone(folder: Path) -> None:
    record = json.loads((folder / "sweep.json").read_text())
    record["source_file"] = str(folder.parent / "moved-away.py")
    (folder / "sweep.json").write_text(json.dumps(record))


CASES = [
    # -- malformed sweep files
    Case("syntax-error", ["launch", "bad.py"], "bad.py:4: syntax error",
         sweep_file(HEADER.replace("(config, trial):", "(config, trial)"))),
    Case("no-sweep", ["launch", "bad.py"], "defines no Sweep", sweep_file(HEADER)),
    Case("two-sweeps", ["launch", "bad.py"], "defines more than one Sweep (a, b)",
         sweep_file(HEADER + "a = " + good()[8:] + "b = " + good()[8:]
                    .replace("'s'", "'t'"))),
    Case("import-fails", ["launch", "bad.py"], "importing the sweep file failed: "
         "ZeroDivisionError", sweep_file(HEADER + "rate = 1 / 0\n")),
    Case("unknown-option", ["launch", "bad.py"], "retries: unknown option",
         with_options("retries=3")),
    Case("empty-space", ["launch", "bad.py"], "space: Dictionary should have at least 1",
         sweep_file(HEADER + "sweep = Sweep(name='s', train=train, space={}, metric='loss')\n")),
    Case("inconsistent-randint", ["launch", "bad.py"], "space.units: low must be less than high",
         sweep_file(HEADER + "sweep = Sweep(name='s', train=train, space={'units': "
                    "randint(8, 8)}, metric='loss')\n")),
    Case("loguniform-from-zero", ["launch", "bad.py"], "space.lr: low must be positive",
         sweep_file(HEADER + "sweep = Sweep(name='s', train=train, space={'lr': "
                    "loguniform(0, 1)}, metric='loss')\n")),
    Case("space-not-a-domain", ["launch", "bad.py"], "space.lr: must be grid([...])",
         sweep_file(HEADER + "sweep = Sweep(name='s', train=train, space={'lr': 0.1}, "
                    "metric='loss')\n")),
    Case("metric-wrong-type", ["launch", "bad.py"], "metric: Input should be a valid string",
         sweep_file(HEADER + "sweep = Sweep(name='s', train=train, space={'lr': grid([1])}, "
                    "metric=3)\n")),
    Case("max-failures-wrong-type", ["launch", "bad.py"], "max_failures: Input should be a "
         "valid integer", with_options("max_failures='many'")),
    Case("absurd-num-samples", ["launch", "bad.py"], "num_samples: 2 grid point(s) x "
         "num_samples 1000000000", with_options("num_samples=10**9")),
    Case("absurd-grid", ["launch", "bad.py"], "space: 1000000 grid point(s)",
         sweep_file(HEADER + "sweep = Sweep(name='s', train=train, space={f'p{i}': "
                    "grid(range(10)) for i in range(6)}, metric='loss')\n")),
    Case("nan-threshold", ["launch", "bad.py"], "stop.metric_threshold: Input should be a "
         "finite number", with_options("stop={'metric_threshold': float('nan')}")),
    Case("no-checkpoints-kept", ["launch", "bad.py"], "keep_checkpoints: Input should be "
         "greater than 0", with_options("keep_checkpoints=0")),
    Case("train-signature", ["launch", "bad.py"], "train: must accept two arguments (config, "
         "trial), train(config) does not",
         sweep_file(HEADER.replace("(config, trial)", "(config)") + good())),
    # -- names that are not folder names
    Case("name-with-slash", ["launch", "bad.py"], "name: name 'a/b' must not contain '/'",
         sweep_file(HEADER + good().replace("'s'", "'a/b'"))),
    Case("name-dot-dot", ["launch", "bad.py"], "name: name '..' must not contain",
         sweep_file(HEADER + good().replace("'s'", "'..'"))),
    Case("name-with-nul", ["launch", "bad.py"], r"name: name 'a\x00b' must not contain",
         sweep_file(HEADER + good().replace("'s'", "'a\\x00b'"))),
    Case("name-too-long", ["launch", "bad.py"], "name: name 'xxxxxxxxxxxxxxxxxxxx'... is 300 "
         "bytes long", sweep_file(HEADER + good().replace("'s'", "'x' * 300"))),
    Case("scheduler-unknown-type", ["launch", "bad.py"], "scheduler: Input tag 'hyperband' "
         "found using 'type' does not match", with_options("scheduler={'type': 'hyperband'}")),
    Case("asha-reduction-factor-one", ["launch", "bad.py"], "scheduler.reduction_factor: Input "
         "should be greater than 1", with_options("scheduler={'type': 'asha', 'grace_period': 1, "
                                                 "'max_t': 9, 'reduction_factor': 1}")),
    Case("asha-max-t-below-grace", ["launch", "bad.py"], "scheduler: max_t (5) must be at least "
         "grace_period (10)", with_options("scheduler={'type': 'asha', 'grace_period': 10, "
                                           "'max_t': 5}")),
    Case("asha-unknown-key", ["launch", "bad.py"], "scheduler.eta: unknown option",
         with_options("scheduler={'type': 'asha', 'grace_period': 1, 'max_t': 9, 'eta': 3}")),
    Case("median-min-samples-zero", ["launch", "bad.py"], "scheduler.min_samples: Input should "
         "be greater than 0", with_options("scheduler={'type': 'median_stopping', "
                                           "'grace_period': 5, 'min_samples': 0}")),
    # -- bad command lines
    Case("unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
    Case("set-scheduler-grace-zero", ["launch", "bad.py", "--set", "scheduler.grace_period=0"],
         "scheduler.grace_period: Input should be greater than 0",
         with_options("scheduler={'type': 'asha', 'grace_period': 1, 'max_t': 9}")),
    Case("no-sweep-file", ["launch", "missing.py"], "sweep file 'missing.py' does not exist"),
    Case("max-concurrent-zero", ["launch", "good.py", "--max-concurrent", "0"],
         "--max-concurrent: expected a positive integer, got '0'"),
    Case("set-unknown-option", ["launch", "good.py", "--set", "retries=3"],
         "retries: unknown option"),
    Case("set-bad-value", ["launch", "good.py", "--set", "stop.max_steps=-3"],
         "stop.max_steps: Input should be greater than 0"),
    Case("set-name-escaping", ["launch", "good.py", "--set", "name=../../etc"],
         "name: name '../../etc' must not contain"),
    Case("address-unreachable", ["launch", "good.py", "--address", "127.0.0.1:1"],
         "cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"),
    Case("resources-no-node-has", ["launch", "good.py", "--set", "resources.cpu=1000"],
         "resources: no node of the cluster can run a trial: it asks for cpu 1000"),
    Case("bad-scope", ["best", "logs", "--scope", "everything"],
         "argument --scope: invalid choice: 'everything'"),
    # -- storage that cannot be used
    Case("storage-under-a-file", ["launch", "good.py", "--storage", "afile/logs"],
         "storage 'afile/logs' cannot be created: 'afile' is not a writable folder",
         lambda tmp: (good_file(tmp), (tmp / "afile").write_text("not a folder"))),
    Case("spec-storage-is-a-file", ["launch", "bad.py"], "storage 'afile' is not a folder",
         lambda tmp: (with_options("storage='afile'")(tmp), (tmp / "afile").write_text(""))),
    Case("storage-read-only", ["launch", "good.py", "--storage", "readonly"],
         "storage 'readonly' is not writable",
         lambda tmp: (good_file(tmp), (tmp / "readonly").mkdir())),
]

# Cases on a copy of the reference run's finished sweep folder (``{folder}``).
FOLDER_CASES = [
    Case("state-json-corrupt", ["resume", "{folder}"], "sweep state '{folder}/state.json' is "
         "corrupt", corrupt("state.json", '{"sweep": "faults", "trials": [')),
    Case("state-json-wrong-shape", ["status", "{folder}"], "sweep state '{folder}/state.json' "
         "is corrupt", corrupt("state.json", '{"sweep": "faults", "spec_hash": "x", '
                                              '"trials": {"0": 1}}')),
    Case("sweep-json-corrupt-resume", ["resume", "{folder}"], "sweep record "
         "'{folder}/sweep.json' is corrupt", corrupt("sweep.json", '{"spec": ')),
    Case("sweep-json-corrupt-best", ["best", "{folder}"], "'{folder}/sweep.json' is corrupt",
         corrupt("sweep.json", "\x00\x01 not json")),
    Case("sweep-file-gone", ["resume", "{folder}"], "the sweep file '{logs}/moved-away.py'"
         " recorded in '{folder}/sweep.json' no longer exists", sweep_file_gone),
    Case("trial-id-escaping", ["best", "{folder}"], "bad trial id '../../etc'",
         state_with_trial_id("../../etc")),
    Case("trial-id-with-nul", ["best", "{folder}", "--json"], r"bad trial id 'a\x00b'",
         state_with_trial_id("a\x00b")),
    Case("spec-changed", ["launch", "{sweep}", "--storage", "logs", "--set", "max_failures=5"],
         "was launched with another spec (max_failures: 2 -> 5)", lambda folder: None),
]


def run_cli(args: list[str], tmp: Path, read_only: Path | None = None):
    command = [sys.executable, "-m", "service", *args]
    if read_only is not None:
        command = read_only_storage(command, read_only)
    return subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=60)


def read_only_storage(command: list[str], folder: Path) -> list[str]:
    """``command`` run where ``folder`` cannot be written: as root (whom permissions do not
    stop) inside its own mount namespace with ``folder`` bind-mounted read-only over itself,
    as anyone else with the folder's write permission removed."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return command
    quoted = " ".join(f"'{part}'" for part in command)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount --bind '{folder}' '{folder}' && mount -o remount,bind,ro '{folder}' '{folder}'"
            f" && exec {quoted}"]


def check_refusal(done, culprit: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    assert culprit in errors[0], (culprit, errors[0])


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_is_refused_with_one_message_and_nothing_written(case, tmp_path):
    case.setup(tmp_path)
    before = listing(tmp_path, skip=("__pycache__",))
    read_only = tmp_path / "readonly" if case.id == "storage-read-only" else None
    try:
        done = run_cli(case.args, tmp_path, read_only)
    finally:
        if read_only is not None:
            read_only.chmod(0o755)
    check_refusal(done, case.culprit)
    assert listing(tmp_path, skip=("__pycache__",)) == before


@pytest.mark.parametrize("case", FOLDER_CASES, ids=lambda case: case.id)
def test_a_damaged_sweep_folder_is_refused_with_one_message_and_left_as_it_is(
        case, tmp_path, reference_run):
    folder = finished_copy(tmp_path, reference_run)
    case.setup(folder)
    before = listing(tmp_path, skip=("__pycache__",))
    fill = {"folder": str(folder), "logs": str(folder.parent),
            "sweep": str(reference_run.sweep_path)}
    done = run_cli([arg.format(**fill) for arg in case.args], tmp_path)
    check_refusal(done, case.culprit.format(**fill))
    assert listing(tmp_path, skip=("__pycache__",)) == before


# ----------------------------------------------------------------- the Python API

def model(hidden: int):
    """The reference sweep's network (sweeps/faults.py) with ``hidden`` units."""
    x = en.placeholder((None, 4), name="x")
    y = en.placeholder((None, 1), name="y")
    h = en.layers.dense(x, hidden, activation="tanh", name="hidden")
    logits = en.layers.dense(en.dropout(h, 0.2), 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    return en.optim.Adam(lr=0.05).minimize(loss)


# The control restores, in this process, a checkpoint a Ray worker wrote (other thread
# settings): the Saver says so, rightly.
@pytest.mark.filterwarnings("ignore::engine.checkpoint.CheckpointWarning")
def test_restoring_the_best_trial_into_another_architecture_names_the_variables(
        tmp_path, reference_run):
    folder = finished_copy(tmp_path, reference_run)
    before = listing(tmp_path)
    sess = en.Session(seed=0)
    sess.attach(model(hidden=8))
    with pytest.raises(en.GraphError) as err:
        load(folder).restore_best(sess)
    message = str(err.value)
    assert "variable 'hidden/kernel' has shape (4, 8) in the graph but (4, 16)" in message
    assert "'Adam/hidden/kernel/m'" in message and "Traceback" not in message
    assert listing(tmp_path) == before
    # Control: the same call with the sweep's own architecture restores the best trial.
    sess = en.Session(seed=0)
    sess.attach(model(hidden=16))
    assert load(folder).restore_best(sess) == 40


class Payload:
    """Unpickling this creates a file: proof that a checkpoint ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("the checkpoint ran code",))


def test_a_crafted_checkpoint_holding_pickled_objects_is_refused_without_running_them(
        tmp_path, reference_run):
    folder = finished_copy(tmp_path, reference_run)
    best = load(folder).best()
    marker = tmp_path / "pwned"
    # A checkpoint whose manifest checksums match its data: only its content is hostile.
    data_file = Path(best.checkpoint + ".npz")
    payload = np.empty(1, dtype=object)
    payload[0] = Payload(str(marker))
    np.savez(data_file, **{"hidden/kernel": payload})
    assert pickle.dumps(payload[0])        # it really pickles to code
    blob = data_file.read_bytes()
    manifest_file = Path(best.checkpoint + ".json")
    manifest = json.loads(manifest_file.read_text())
    manifest.update(size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    manifest_file.write_text(json.dumps(_seal(manifest)))
    before = listing(tmp_path)

    sess = en.Session(seed=0)
    sess.attach(model(hidden=16))
    with pytest.raises(en.CheckpointError) as err:
        load(folder).restore_best(sess)
    assert "holds a object array" in str(err.value) and data_file.name in str(err.value)
    assert not marker.exists()
    assert listing(tmp_path) == before
