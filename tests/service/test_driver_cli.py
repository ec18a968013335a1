"""A 12-trial grid end to end from a sweep file outside the repository, run by the command
line (``python -m service launch FILE``) and as a script (``python FILE.py``), each driver
with its own embedded Ray; the runs are read back with TensorBoard's own reader."""

import json
import subprocess
import sys

from tensorboard.backend.event_processing import event_accumulator

from service.messages import TrialState
from service.storage import SweepState
from tests.service.conftest import calls
from tests.service.tb_helpers import hparam_values, hparams_data, load_run

STEPS = 30      # sweeps/grid12.py


def results(run_dir):
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_a_grid_from_a_sweep_file_outside_the_repository(sweep_file, tmp_path):
    path = sweep_file("grid12")
    storage = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "service", "launch", str(path), "--storage",
                           str(storage)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    root = storage / "grid12"
    state = SweepState.load(root / "state.json")
    assert len(state.trials) == 12
    assert {t.state for t in state.trials} == {TrialState.TERMINATED}
    assert all(len(starts) == 1 for starts in calls(path).values()) and len(calls(path)) == 12
    assert json.loads((root / "sweep.json").read_text())["source_file"] == str(path)
    # the final table lists every trial, best first
    table = done.stdout.strip().splitlines()
    assert len(table) == 13 and table[0].split()[:3] == ["trial", "state", "loss"]
    finals = {}
    for trial in state.trials:
        run_dir = root / trial.id
        rows = results(run_dir)
        assert [r["step"] for r in rows] == list(range(STEPS))
        run = load_run(run_dir)
        for tag in ("loss", "accuracy"):
            points = [(e.step, e.value) for e in run.Scalars(tag)]
            assert points == [(r["step"], r["metrics"][tag]) for r in rows], (trial.id, tag)
        assert run.Tags()[event_accumulator.GRAPH]
        assert any(node.op == "MatMul" for node in run.Graph().node)
        hparams = hparams_data(run_dir)
        start = hparams["_hparams_/session_start_info"].session_start_info
        assert hparam_values(start) == trial.config
        assert hparams["_hparams_/session_end_info"].session_end_info.status == 1  # SUCCESS
        assert trial.last_metrics["loss"] == rows[-1]["metrics"]["loss"]
        finals[trial.id] = rows[-1]["metrics"]["loss"]
    experiment = hparams_data(root)["_hparams_/experiment"].experiment
    assert [h.name for h in experiment.hparam_infos] == ["lr", "hidden", "seed"]
    assert [m.name.tag for m in experiment.metric_infos] == ["loss"]
    best = subprocess.run([sys.executable, "-m", "service", "best", str(root), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert best.returncode == 0, best.stderr
    answer = json.loads(best.stdout)
    expected = min(finals, key=finals.get)
    assert (answer["trial"], answer["value"]) == (expected, finals[expected])
    assert answer["checkpoint"].endswith(f"{expected}/checkpoints/ckpt-{STEPS}")


def test_a_sweep_file_run_as_a_script(sweep_file, tmp_path):
    path = sweep_file("grid12")
    done = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    state = SweepState.load(tmp_path / "logs" / "grid12" / "state.json")
    assert [t.state for t in state.trials] == [TrialState.TERMINATED] * 12
    record = json.loads((tmp_path / "logs" / "grid12" / "sweep.json").read_text())
    assert (record["source_file"], record["train_name"]) == (str(path), "train")
    assert "\r" not in done.stdout          # no progress line when output is not a terminal
