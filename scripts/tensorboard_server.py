"""A ``tensorboard`` server for a while: on a free port of 127.0.0.1, in its own process group.

For programs that need a real TensorBoard and then none (tests, the documentation's
screenshots)::

    with TensorBoardServer("logs/triangle") as tb:
        runs = tb.get_json("/data/runs")

``gradsweep tensorboard`` serves in the foreground instead, until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class TensorBoardServer:
    """``tensorboard --logdir logdir`` on a free 127.0.0.1 port, with more flags ``args``.

    ``start`` waits up to ``start_timeout`` seconds for its "TensorBoard ... at http://..."
    line, which gives ``url``. ``stop`` terminates the server's process group (TensorBoard
    and its data server), kills what is left after 5 s, and reaps the server. As a context
    manager it starts on entry and always stops on exit.
    """

    def __init__(self, logdir: str | os.PathLike, *, args: Sequence[str] = (),
                 start_timeout: float = 30.0) -> None:
        self.logdir = Path(logdir)
        self.args = tuple(args)
        self.start_timeout = start_timeout
        self.url: str | None = None
        self.pgid: int | None = None    # the server's process group (its pid)
        self._process: subprocess.Popen | None = None
        self._stderr: list[str] = []

    def __enter__(self) -> TensorBoardServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until it serves (raises with its stderr otherwise)."""
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(self.logdir),
                   "--host", "127.0.0.1", "--port", "0",
                   # The Rust data server binds "localhost" unless told otherwise.
                   "--extra_data_server_flags=--host=127.0.0.1", *self.args]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.pgid = self._process.pid
        found = threading.Event()

        def read_stderr(process: subprocess.Popen) -> None:
            for line in process.stderr:
                self._stderr.append(line)
                match = re.search(r"TensorBoard \S+ at (http://\S+?)/? \(", line)
                if match:
                    self.url = match.group(1)
                    found.set()
            found.set()  # the process ended

        threading.Thread(target=read_stderr, args=(self._process,), daemon=True).start()
        try:
            if not found.wait(self.start_timeout) or self.url is None:
                raise RuntimeError(f"tensorboard did not start within {self.start_timeout} s "
                                   f"(exit status {self._process.poll()}):\n{self.stderr}")
        except BaseException:
            self.stop()
            raise

    @property
    def stderr(self) -> str:
        """What the server printed so far."""
        return "".join(self._stderr)

    def stop(self) -> None:
        """Terminate the server's process group, kill it after 5 s, and reap the server."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        # Whatever is left of the group (the data server, or a server ignoring SIGTERM).
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(5)

    def get(self, path: str, **params: str) -> bytes:
        """GET ``path`` (e.g. "/data/plugin/graphs/graph") with query ``params``; the body."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        return self._fetch(urllib.request.Request(self.url + path + query))

    def get_json(self, path: str, **params: str) -> Any:
        """GET ``path`` (e.g. "/data/runs") with query ``params``; the parsed JSON."""
        return json.loads(self.get(path, **params))

    def post_json(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``path`` (e.g. "/data/plugin/hparams/experiment")."""
        return json.loads(self._fetch(urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})))

    def _fetch(self, request: urllib.request.Request) -> bytes:
        if self.url is None:
            raise RuntimeError("the tensorboard server is not running")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()
