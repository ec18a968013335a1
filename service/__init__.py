"""gradsweep's service: sweeps on Ray, TensorBoard logging, checkpoints and resume.

    from service import Sweep, grid, choice, uniform, loguniform, randint

    sweep = Sweep(name="triangle", train=train, space={"lr": grid([0.01, 0.1])},
                  metric="loss", mode="min")
    sweep.run()

Early stopping: ``Sweep(..., scheduler=asha(grace_period=100, max_t=2000))`` or
``scheduler=median_stopping(grace_period=200)``. Model-based search (the ``optuna`` extra):
``Sweep(..., search=optuna_search(sampler="tpe", seed=0), num_samples=60)``.

Importing this package starts nothing (Ray starts when a sweep runs).
"""

from service.results import SweepResult, load
from service.schedulers import asha, median_stopping
from service.search import optuna_search
from service.summary_writer import SummaryWriter
from service.spec import SpecError, choice, grid, loguniform, randint, uniform
from service.sweep import Sweep

__all__ = ["SpecError", "SummaryWriter", "Sweep", "SweepResult", "asha", "choice", "grid",
           "load", "loguniform", "median_stopping", "optuna_search", "randint", "uniform"]
