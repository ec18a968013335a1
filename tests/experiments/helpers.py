"""Helpers of the experiment tests: import an experiment file, read a finished sweep."""

import importlib.util
import io
import json
import os
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType

import service

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def load_experiment(name: str) -> ModuleType:
    """Import ``experiments/<name>.py`` in quick mode (its constants and data generators)."""
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    saved = os.environ.get("GRADSWEEP_QUICK")
    os.environ["GRADSWEEP_QUICK"] = "1"
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del os.environ["GRADSWEEP_QUICK"]
        else:
            os.environ["GRADSWEEP_QUICK"] = saved
    assert module.QUICK
    return module


def best_json(folder: Path) -> dict:
    """What ``python -m service best FOLDER --json`` prints."""
    from service.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        status = main(["best", str(folder), "--json"])
    assert status == 0
    return json.loads(out.getvalue())


def finished(folder: Path) -> service.SweepResult:
    """The sweep in ``folder``, checked to have run every trial to its end, and to agree with
    what the ``best`` command prints."""
    result = service.load(folder)
    assert result.trials, f"{folder}: no trials"
    states = {t.id: t.state.value for t in result.trials}
    assert set(states.values()) == {"TERMINATED"}, states
    assert best_json(folder) == result.best().to_dict()
    return result


def last(result: service.SweepResult, **config) -> dict:
    """The last metrics of the one trial whose config has these values."""
    [trial] = [t for t in result.trials
               if all(t.config[k] == v for k, v in config.items())]
    return trial.last_metrics
