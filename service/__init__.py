"""gradsweep's service: sweeps on Ray, TensorBoard logging, checkpoints and resume.

    from service import Sweep, grid, choice, uniform, loguniform, randint

    sweep = Sweep(name="triangle", train=train, space={"lr": grid([0.01, 0.1])},
                  metric="loss", mode="min")
    sweep.run()

Importing this package starts nothing (Ray starts when a sweep runs).
"""

from service.results import SweepResult, load
from service.spec import SpecError, choice, grid, loguniform, randint, uniform
from service.sweep import Sweep

__all__ = ["SpecError", "Sweep", "SweepResult", "choice", "grid", "load", "loguniform",
           "randint", "uniform"]
