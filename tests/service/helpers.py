"""Helpers of the service tests that build what the driver would."""

import dataclasses
import errno
import os

from service.checkpoints import restore_point
from service.trial import TrialTask


def with_restore_point(task: TrialTask) -> TrialTask:
    """``task`` with the restore point the driver would fix for it now (the latest
    checkpoint of its trial that verifies)."""
    ref = restore_point(task.sweep_dir, task.paths.checkpoints, None)
    return dataclasses.replace(task, restore=ref)


def atomic_files_full_after(monkeypatch, limit: int) -> None:
    """Files written atomically (``engine.atomic``) hold at most ``limit`` bytes in all,
    then their writes raise ENOSPC, as on a full disk."""
    import builtins

    from engine import atomic

    budget = [limit]

    class Full:
        def __init__(self, file):
            self._file = file

        def write(self, data):
            if len(data) > budget[0]:
                self._file.write(bytes(data[:budget[0]]))
                budget[0] = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            budget[0] -= len(data)
            return self._file.write(data)

        def __getattr__(self, name):
            return getattr(self._file, name)

    monkeypatch.setattr(atomic, "open", lambda *a, **k: Full(builtins.open(*a, **k)),
                        raising=False)
