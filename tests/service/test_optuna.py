"""Model-based search with Optuna: the space's domains as Optuna distributions, trials asked
only when a slot is free and told when they end (COMPLETE, PRUNED, FAIL), the study in the
sweep folder as Optuna's journal, read back by optuna-dashboard over HTTP; a killed driver
resumed asks nothing twice; the error without the extra."""

import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

import service.search.optuna as optuna_module                      # noqa: E402
from service import SpecError, Sweep, asha, choice, grid, loguniform, optuna_search  # noqa: E402
from service import randint, uniform                                # noqa: E402
from service.driver import run_sweep                                # noqa: E402
from service.messages import TrialState                             # noqa: E402
from service.spec import trial_count                                # noqa: E402
from service.storage import SweepState                              # noqa: E402
from service.sweep import load_sweep_file                           # noqa: E402
from tests.drivers import reap, running, start_driver               # noqa: E402
from tests.service.sweeps.tpe import loss_of                        # noqa: E402

States = optuna.trial.TrialState


def study_of(root):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    return optuna.load_study(study_name=root.name, storage=storage)


def train(config, trial):
    pass


def test_every_domain_maps_to_its_optuna_distribution():
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    sweep = Sweep(name="s", train=train, metric="loss", search=optuna_search(),
                  space={"a": uniform(0.5, 2), "b": loguniform(1e-4, 1e-1), "c": randint(2, 7),
                         "d": choice(["relu", "tanh"]), "e": grid([1, 2, 3])})
    found = optuna_module.distributions(sweep.spec.space)
    assert found == {"a": FloatDistribution(0.5, 2),
                     "b": FloatDistribution(1e-4, 1e-1, log=True),
                     "c": IntDistribution(2, 6),          # randint(a, b) is [a, b)
                     "d": CategoricalDistribution(["relu", "tanh"]),
                     "e": CategoricalDistribution([1, 2, 3])}   # a grid is one more dimension
    # num_samples is the number of trials (a grid does not multiply it)
    assert trial_count(sweep.replace(num_samples=7).spec) == 7


def test_a_sampler_instance_and_bad_samplers():
    instance = optuna.samplers.CmaEsSampler(seed=0)
    sweep = Sweep(name="s", train=train, metric="loss", space={"a": uniform(0, 1)},
                  search=optuna_search(sampler=instance))
    assert sweep.sampler_instance is instance and sweep.spec.search.sampler == "CmaEsSampler"
    with pytest.raises(SpecError, match="search.sampler: unknown sampler 'annealing'"):
        Sweep(name="s", train=train, metric="loss", space={"a": uniform(0, 1)},
              search={"type": "optuna", "sampler": "annealing"})
    with pytest.raises(SpecError, match="search.sampler: 'CmaEsSampler' names a sampler"):
        Sweep(name="s", train=train, metric="loss", space={"a": uniform(0, 1)},
              search={"type": "optuna", "sampler": "CmaEsSampler"})


def test_without_the_extra_the_error_names_it(monkeypatch):
    real = optuna_module.importlib.util.find_spec
    monkeypatch.setattr(optuna_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "optuna" else real(name, *a))
    with pytest.raises(SpecError, match=r"gradsweep\[optuna\]"):
        optuna_search()


def test_the_service_imports_no_optuna_until_a_sweep_searches_with_it():
    code = ("import sys, service, service.driver, service.cli, service.search\n"
            "assert 'optuna' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_asked_when_a_slot_is_free_and_told_how_each_trial_ended(local_ray, sweep_file,
                                                                 tmp_path, monkeypatch):
    in_flight = []
    real_suggest = optuna_module.OptunaSearcher.suggest

    def suggest(self, index):
        running_now = [t for t in self.study.get_trials(deepcopy=False)
                       if t.state == States.RUNNING]
        in_flight.append(len(running_now))
        return real_suggest(self, index)

    monkeypatch.setattr(optuna_module.OptunaSearcher, "suggest", suggest)
    sweep = load_sweep_file(sweep_file("tpe")).replace(
        num_samples=12, scheduler=asha(grace_period=5, reduction_factor=2, max_t=40))
    result = run_sweep(sweep, storage=str(tmp_path / "logs"), out=io.StringIO())
    assert max(in_flight) <= 1      # asked with a free slot: at most max_concurrent - 1 others
    study = study_of(result.root)
    assert [t.number for t in study.trials] == list(range(12))
    assert len(result.trials) == 12
    seen = set()
    for record, trial in zip(sorted(result.trials, key=lambda t: t.index), study.trials):
        assert record.id.startswith(f"{trial.number:02d}_") and record.config == trial.params
        seen.add(tuple(sorted(trial.params.items())))
        if record.state == TrialState.ERROR:
            assert trial.state == States.FAIL and record.config["fail"]
        elif record.state == TrialState.STOPPED:
            assert trial.state == States.PRUNED and record.reason.startswith("asha:")
        else:
            assert trial.state == States.COMPLETE
            assert trial.value == record.last_metrics["loss"] == \
                loss_of(record.config, record.last_step)
        if record.state != TrialState.ERROR:     # intermediate values at the trial's steps
            assert sorted(trial.intermediate_values) == list(range(record.last_step + 1))
    assert len(seen) == 12                                   # nothing proposed twice
    states = {t.state for t in study.trials}
    assert {States.COMPLETE, States.PRUNED, States.FAIL} <= states, states
    # TensorBoard's HParams gets the proposed values (params.json is the run's session
    # start), and the ids that status shows carry them
    first = sorted(result.trials, key=lambda t: t.index)[0]
    assert json.loads((result.root / first.id / "params.json").read_text()) == first.config
    assert f"x={first.config['x']:.4g}" in first.id


def climb(config, trial):
    trial.report(0, score=-abs(config["x"] - 0.5))


def test_mode_max_maximises(local_ray, tmp_path):
    from ray import cloudpickle

    sweep = Sweep(name="up", train=climb, metric="score", mode="max", num_samples=3,
                  space={"x": uniform(0, 1)}, search=optuna_search(sampler="random", seed=1))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        result = run_sweep(sweep, storage=str(tmp_path), out=io.StringIO())
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    study = study_of(result.root)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.best_value == max(t.last_metrics["score"] for t in result.trials)


def test_a_killed_driver_resumes_without_asking_twice(sweep_file, tmp_path):
    path = sweep_file("tpe")
    root = tmp_path / "logs" / "tpe"
    env = {**os.environ, "GRADSWEEP_TEST_STEP_SECONDS": "0.1"}
    driver = start_driver(["launch", str(path), "--storage", str(tmp_path / "logs")],
                          cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (len(list(root.glob("*/result.json"))) >= 2 and
                   any(not (d / "result.json").exists() and
                       (d / "checkpoints" / "checkpoint").exists()
                       for d in root.iterdir() if d.is_dir())):
            running(driver)()
            assert time.monotonic() < deadline, "the sweep never got far enough"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
    finally:
        reap(driver)
    before = SweepState.load(root / "state.json").by_id()
    done_before = {p.parent.name for p in root.glob("*/result.json")}
    done = subprocess.run([sys.executable, "-m", "service", "resume", str(root)], cwd=tmp_path,
                          env={**env, "GRADSWEEP_TEST_STEP_SECONDS": "0"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr          # 1: the fail=True trials
    assert "Traceback" not in done.stderr, done.stderr
    state = SweepState.load(root / "state.json").by_id()
    study = study_of(root)
    assert [t.number for t in study.trials] == list(range(10)), \
        [(t.number, t.state.name, t.params) for t in study.trials]   # never beyond num_samples
    configs = set()
    for trial in study.trials:
        [record] = [r for r in state.values() if r.index == trial.number]
        assert record.config == trial.params                         # the same params
        assert trial.state != States.RUNNING                         # every trial told
        configs.add(tuple(sorted(trial.params.items())))
        if record.id in done_before:                                 # finished: not rerun
            assert len(record.attempts) == len(before[record.id].attempts), record.id
    assert len(configs) == 10                                        # nothing proposed twice
    resumed = [r for r in state.values() if r.id in before and r.id not in done_before
               and [a.outcome for a in r.attempts][:1] == ["driver-lost"]]
    assert resumed, "no trial was running when the driver died"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_reads_the_journal_over_http(local_ray, sweep_file, tmp_path):
    sweep = load_sweep_file(sweep_file("tpe")).replace(num_samples=4)
    result = run_sweep(sweep, storage=str(tmp_path / "logs"), out=io.StringIO())
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or \
        "optuna-dashboard"
    port = free_port()
    server = subprocess.Popen([exe, str(result.root / "optuna.journal"), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies",
                                            timeout=5) as r:
                    studies = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline
                time.sleep(0.2)
        [study] = [s for s in studies if s["study_name"] == "tpe"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}"
                                    "?after=0", timeout=10) as r:
            trials = json.loads(r.read())["trials"]
        assert [t["number"] for t in trials] == list(range(4))
        for t, record in zip(trials, sorted(result.trials, key=lambda t: t.index)):
            params = {p["name"]: p["param_external_value"] for p in t["params"]}
            assert params == {k: str(v) for k, v in record.config.items()}
            if t["state"] == "Complete":
                assert math.isclose(t["values"][0], record.last_metrics["loss"])
    finally:
        server.terminate()
        server.wait(10)


def test_a_trial_asked_by_a_driver_killed_mid_ask_is_completed_not_asked_again(tmp_path):
    """The journal holds trial 0 with one of its two parameters (the driver died between
    them): the next driver keeps that value, draws the other, and asks no new trial."""
    from optuna.distributions import FloatDistribution

    sweep = Sweep(name="torn", train=train, metric="loss", num_samples=3,
                  space={"a": uniform(0, 1), "b": loguniform(1e-3, 1.0)},
                  search=optuna_search(seed=4))
    folder = tmp_path / "torn"
    folder.mkdir()
    first = optuna_module.OptunaSearcher(sweep.spec.search)
    first.setup(sweep.spec, folder, [])
    torn = first.study.ask()
    torn.suggest_float("a", 0, 1)                     # "b" never written
    again = optuna_module.OptunaSearcher(sweep.spec.search)
    again.setup(sweep.spec, folder, [])
    config = again.suggest(0)
    assert config["a"] == torn.params["a"] and 1e-3 <= config["b"] <= 1.0
    study = study_of(folder)
    assert len(study.trials) == 1 and study.trials[0].params == config
    assert study.trials[0].distributions["b"] == FloatDistribution(1e-3, 1.0, log=True)
    assert again.suggest(1) != config and len(study_of(folder).trials) == 2
