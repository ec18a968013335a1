"""Run each experiment's ``--quick`` sweep once per test session, for real: a driver in a
subprocess with its own embedded local Ray, writing to a temporary folder.

``quick_sweep(name)`` returns the sweep's folder (``<tmp>/logs/<name>-quick``), running
``python experiments/<name>.py --quick`` the first time it is asked for; with
``via="launch"`` it runs ``GRADSWEEP_QUICK=1 python -m service launch experiments/<name>.py``
instead (the command-line path: the sweep file is imported, not run as ``__main__``).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.experiments.helpers import EXPERIMENTS

TIMEOUT_S = 240


@pytest.fixture(scope="session")
def quick_sweep(tmp_path_factory):
    done: dict[str, Path] = {}

    def run(name: str, via: str = "script") -> Path:
        if name not in done:
            folder = tmp_path_factory.mktemp(name)
            env = {k: v for k, v in os.environ.items()
                   if k not in ("RAY_ADDRESS", "GRADSWEEP_QUICK")}
            source = str(EXPERIMENTS / f"{name}.py")
            if via == "script":
                command = [sys.executable, source, "--quick"]
            else:
                command = [sys.executable, "-m", "service", "launch", source,
                           "--storage", str(folder / "logs")]
                env["GRADSWEEP_QUICK"] = "1"
            proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                                  timeout=TIMEOUT_S)
            assert proc.returncode == 0, (f"{' '.join(command)} exited {proc.returncode}\n"
                                          f"{proc.stdout}\n{proc.stderr}")
            done[name] = folder / "logs" / f"{name}-quick"
        return done[name]

    return run
