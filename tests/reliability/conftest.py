"""Fixtures of the reliability tests.

``local_ray``: the service tests' session-wide embedded Ray (2 CPUs), shared.
``reference``: ``sweeps/faults.py`` run once without any fault on that Ray: ``{trial id:
outcome}`` (see ``helpers.outcome``), what every faulty run must end with, bit for bit.
"""

import pytest

from tests.reliability.helpers import DriverThread, copy_sweep, outcome
from tests.service.conftest import local_ray  # noqa: F401 - the shared session Ray


@pytest.fixture(scope="session")
def reference(local_ray, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("reference")
    driver = DriverThread(copy_sweep(folder), folder / "logs")
    result, status = driver.join()
    assert status == 0
    return {t.id: outcome(result.root, t.id) for t in result.trials}
