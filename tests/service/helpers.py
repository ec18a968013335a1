"""Helpers of the service tests that build what the driver would."""

import dataclasses

from service.checkpoints import restore_point
from service.trial import TrialTask


def with_restore_point(task: TrialTask) -> TrialTask:
    """``task`` with the restore point the driver would fix for it now (the latest
    checkpoint of its trial that verifies)."""
    ref = restore_point(task.sweep_dir, task.paths.checkpoints, None)
    return dataclasses.replace(task, restore=ref)
