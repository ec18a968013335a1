"""The fast path's correctness: what makes sweeps cheap must not change what they record.

Speeds themselves are measured in benchmarks/sweep_vs_tune.py, never asserted here.
"""

import importlib.util
import subprocess
import sys

import pytest


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_a_worker_starts_without_importing_torch_and_torch_still_imports_after():
    # tensorboardX imports torch (about a second) unless kept from it; a user's train that
    # imports torch must still get the real one.
    code = ("import sys, service.worker, service.driver\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "import tensorboardX.writer, torch\n"
            "assert torch.zeros(2).sum().item() == 0.0\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
