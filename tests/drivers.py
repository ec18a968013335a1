"""Driver subprocesses for the tests: ``python -m service ARGS`` in a process group of its
own, so that what a killed driver leaves behind (its embedded Ray's processes) can be
reaped with it."""

import os
import signal
import subprocess
import sys
from collections.abc import Callable


def start_driver(args, cwd, env: dict | None = None) -> subprocess.Popen:
    """``python -m service ARGS`` in ``cwd``, its output captured."""
    return subprocess.Popen([sys.executable, "-m", "service", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def running(driver: subprocess.Popen) -> Callable[[], None]:
    """A check for ``wait_for(..., alive=)``: raises, with the driver's stderr, once the
    driver has ended."""
    def check():
        if driver.poll() is not None:
            raise AssertionError(f"the driver ended ({driver.returncode}):\n"
                                 f"{driver.communicate()[1][-3000:]}")
    return check


def reap(driver: subprocess.Popen) -> None:
    """SIGKILL whatever is left of the driver's process group (its Ray's GCS and raylet
    outlive a SIGKILLed driver)."""
    try:
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    driver.communicate(timeout=30)
