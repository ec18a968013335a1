"""The result object and the command line's read-only commands and refusals (no Ray)."""

import json
import subprocess
import sys

import pytest

from service.results import load
from service.spec import grid, sweep_record
from service.sweep import Sweep
from service.messages import TrialState
from service.storage import SweepPaths, SweepState, TrialRecord, atomic_write_json


def train(config, trial):
    pass


def fake_sweep_folder(root, mode="min"):
    """A finished sweep's records, written by hand (the driver's tests make real ones)."""
    sweep = Sweep(name="s", train=train, space={"lr": grid([0.1, 0.2, 0.3])}, metric="loss",
                  mode=mode)
    paths = SweepPaths(root / "s")
    paths.root.mkdir(parents=True)
    atomic_write_json(paths.sweep_json,
                      sweep_record(sweep.spec, sweep.source_file, sweep.train_name))
    trials = []
    for t, last, best, state in zip(sweep.trials(), [0.5, 0.2, float("nan")], [0.1, 0.2, 0.05],
                                    [TrialState.TERMINATED, TrialState.TERMINATED,
                                     TrialState.STOPPED]):
        trials.append(TrialRecord(id=t.id, index=t.index, config=t.config, state=state,
                                  last_step=99, last_metrics={"loss": last},
                                  best_metrics={"step": 40 + t.index, "loss": best}))
    SweepState("s", sweep.spec_hash(), trials).save(paths.state_json)
    return paths.root, sweep.trials()


def test_best_by_last_and_by_all(tmp_path):
    root, trials = fake_sweep_folder(tmp_path)
    result = load(root)
    best = result.best()
    assert best.trial == trials[1].id and best.value == 0.2 and best.step == 99
    assert result.best("all").trial == trials[2].id and result.best("all").step == 42
    assert best.checkpoint is None  # no checkpoint files on storage
    table = result.table().splitlines()
    assert table[1].startswith(trials[1].id) and table[-1].startswith(trials[2].id)
    # The step column shows where the value shown was reported: the last step, or the best.
    steps = {row.split()[0]: row.split()[3] for row in table[1:]}
    assert steps == {t.id: "99" for t in trials}
    steps = {row.split()[0]: row.split()[3] for row in result.table("all").splitlines()[1:]}
    assert steps == {t.id: str(40 + t.index) for t in trials}


def test_best_config_is_the_ranking_alone(tmp_path, monkeypatch):
    root, trials = fake_sweep_folder(tmp_path)
    result = load(root)
    monkeypatch.setattr(type(result), "checkpoint_of",
                        lambda self, trial_id: pytest.fail("best_config looked for a checkpoint"))
    assert result.best_config == trials[1].config == {"lr": 0.2}


def test_best_with_mode_max(tmp_path):
    root, trials = fake_sweep_folder(tmp_path, mode="max")
    assert load(root).best().trial == trials[0].id


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_best_json_and_status_commands(tmp_path):
    root, trials = fake_sweep_folder(tmp_path)
    out = run_cli("best", str(root), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"trial", "config", "metric", "mode", "value", "step", "checkpoint"}
    assert data["trial"] == trials[1].id and data["config"] == {"lr": 0.2}
    status = run_cli("status", str(root))
    assert status.returncode == 0 and "3 trials" in status.stdout and trials[0].id in status.stdout


def listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


@pytest.mark.parametrize("args, message", [
    (["status", "nowhere"], "is not a folder"),
    (["best", "."], "is not a sweep folder"),
    (["resume", "."], "is not a sweep folder"),
    (["launch", "missing.py"], "does not exist"),
    (["launch", "bad.py"], "space.lr: low must be less than high"),
    (["launch", "good.py", "--set", "max_failures=-1"], "max_failures"),
    (["launch", "good.py", "--set", "nonsense"], "expected key=value"),
    (["launch", "good.py", "--storage", "afile"], "is not a folder"),
])
def test_refusals_exit_2_without_traceback_and_write_nothing(tmp_path, args, message):
    (tmp_path / "bad.py").write_text(
        "from service import Sweep, uniform\ndef train(c, t): pass\n"
        "sweep = Sweep(name='b', train=train, space={'lr': uniform(5, 1)}, metric='m')\n")
    (tmp_path / "good.py").write_text(
        "from service import Sweep, grid\ndef train(c, t): pass\n"
        "sweep = Sweep(name='g', train=train, space={'lr': grid([1])}, metric='m')\n")
    (tmp_path / "afile").write_text("x")
    before = listing(tmp_path)
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr and "Traceback" not in out.stderr
    assert listing(tmp_path) == before


def test_usage_errors_exit_2():
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("launch").returncode == 2


def test_tensorboard_links_select_each_sweeps_best_trials(tmp_path):
    import re
    import urllib.parse

    from service.cli import best_runs_links

    root, trials = fake_sweep_folder(tmp_path / "logs")
    for logdir, prefix in ((tmp_path / "logs", "s/"), (root, "")):
        [line] = best_runs_links(logdir, "http://127.0.0.1:6006/", count=1)
        assert "sweep s: its best 1 of 3 trials by loss (min)" in line
        link = line.split()[-1]
        assert link.startswith("http://127.0.0.1:6006/#scalars&regexInput=")
        regex = urllib.parse.unquote(link.split("regexInput=")[1])
        runs = [prefix + t.id for t in trials] + [prefix.rstrip("/") or "."]
        # the one best by the last value (0.2), and no other run, trial ids' dots escaped
        assert [r for r in runs if re.search(regex, r)] == [prefix + trials[1].id]
    [line] = best_runs_links(tmp_path / "logs", "http://h:1/")
    regex = urllib.parse.unquote(line.split("regexInput=")[1])
    assert regex == "^(" + "|".join(re.escape("s/" + trials[i].id) for i in (1, 0)) + ")$"
