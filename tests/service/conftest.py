"""Shared fixtures of the service tests.

``local_ray``: one real Ray for the whole test session (embedded, 127.0.0.1, no dashboard,
2 CPUs), started on first use and shut down at the end. Tests that run a driver in a
subprocess do not use it: that driver starts its own embedded Ray.

``sweep_file``: copies a sweep file of ``tests/service/sweeps`` into the test's temporary
folder (outside the repository), so its ``calls/`` records stay with the test.
"""

import shutil
from pathlib import Path

import pytest

SWEEPS = Path(__file__).resolve().parent / "sweeps"


@pytest.fixture(scope="session")
def local_ray():
    from service import cluster

    with cluster.connect("local", num_cpus=2) as info:
        yield info


@pytest.fixture
def sweep_file(tmp_path):
    def copy(name: str) -> Path:
        folder = tmp_path / "sweepfiles"
        folder.mkdir(exist_ok=True)
        target = folder / f"{name}.py"
        shutil.copy(SWEEPS / f"{name}.py", target)
        return target
    return copy


def calls(sweep_path: Path) -> dict[str, list[int]]:
    """``{trial id: [start step of each call]}`` recorded by a test sweep's train."""
    folder = sweep_path.parent / "calls"
    if not folder.is_dir():
        return {}
    return {p.name: [int(line) for line in p.read_text().split()] for p in folder.iterdir()}
