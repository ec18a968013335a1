"""Schedulers: rules that watch every reported result in the driver and decide, per trial,
whether it continues or stops (see :mod:`service.schedulers.base` for the interface).

    from service import Sweep, asha, median_stopping
    Sweep(..., scheduler=asha(grace_period=100, reduction_factor=3, max_t=2000))

One module per rule: :mod:`~service.schedulers.asha` (asynchronous successive halving and
asynchronous Hyperband), :mod:`~service.schedulers.median` (the median stopping rule). The
controller imports only this package.
"""

from __future__ import annotations

from service.schedulers.asha import AsyncHyperBand, asha
from service.schedulers.base import CONTINUE, Continue, Decision, Scheduler, Stop, SyncSteps
from service.schedulers.median import MedianStopping, median_stopping
from service.spec import AshaSpec, MedianSpec

#: the spec models of the rules, by their ``type``
SCHEDULER_SPECS = {"asha": AshaSpec, "median_stopping": MedianSpec}
#: how the reasons of the rules' stops begin
STOP_PREFIXES = ("asha:", "median stopping:")


def is_scheduler_stop(reason: str | None) -> bool:
    """True for the reason of a trial a scheduler stopped early (not a stop rule's, a time
    budget's or a divergence's)."""
    return reason is not None and reason.startswith(STOP_PREFIXES)


def make_scheduler(spec) -> Scheduler:
    """The scheduler a sweep spec asks for (``spec.scheduler``); the default continues
    every trial."""
    rule = spec.scheduler
    if rule is None:
        return Scheduler()
    if isinstance(rule, AshaSpec):
        return AsyncHyperBand(rule)
    if isinstance(rule, MedianSpec):
        return MedianStopping(rule)
    raise TypeError(f"no scheduler for {rule!r}")


__all__ = ["CONTINUE", "SCHEDULER_SPECS", "AshaSpec", "AsyncHyperBand", "Continue", "Decision",
           "MedianSpec", "MedianStopping", "Scheduler", "Stop", "SyncSteps", "asha",
           "is_scheduler_stop", "make_scheduler", "median_stopping"]
