"""Fixtures of the reliability tests.

``local_ray``: the service tests' session-wide embedded Ray (2 CPUs), shared.
``reference_run``: ``sweeps/faults.py`` run once without any fault on that Ray; its sweep
file and its finished sweep folder (read it, copy it, never change it).
``reference``: ``{trial id: outcome}`` of that run (see ``helpers.outcome``): what every
faulty run must end with, bit for bit.
"""

from types import SimpleNamespace

import pytest

from tests.reliability.helpers import DriverThread, copy_sweep, outcome
from tests.service.conftest import local_ray  # noqa: F401 - the shared session Ray


@pytest.fixture(scope="session")
def reference_run(local_ray, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("reference")
    sweep_path = copy_sweep(folder)
    driver = DriverThread(sweep_path, folder / "logs")
    result, status = driver.join()
    assert status == 0
    return SimpleNamespace(sweep_path=sweep_path, root=result.root, result=result)


@pytest.fixture(scope="session")
def reference(reference_run):
    root = reference_run.root
    return {t.id: outcome(root, t.id) for t in reference_run.result.trials}
