"""Model-based search with Optuna's samplers (TPE by default), through ask and tell.

    from service import Sweep, optuna_search
    Sweep(..., search=optuna_search(sampler="tpe", seed=0), num_samples=60)

The study lives in the sweep folder as Optuna's file journal (``optuna.journal``, a
``JournalStorage`` with a file backend, which Optuna documents for shared file systems),
named after the sweep, so nothing is lost between checkpoints and ``optuna-dashboard
logs/<sweep>/optuna.journal`` shows it live. Trial ``i`` of the sweep is trial number ``i``
of the study: a trial is asked only when a slot is free, and told when it ends — its last
value of the metric when TERMINATED, PRUNED when a scheduler stopped it (its intermediate
values are reported at its own steps), FAIL when it ended in ERROR or diverged.

A sampler named by a string is made anew for every ask, seeded from ``(seed, trial
number)``: its only other state is the study, so a resumed driver neither replays the draws
of its first life nor loses its history. A sampler instance is used as given (and reseeded
on a resume, so that it does not replay its first draws either).

Space: ``uniform`` and ``loguniform`` become ``FloatDistribution`` (``log=True``),
``randint(a, b)`` ``IntDistribution(a, b - 1)``, ``choice`` and ``grid``
``CategoricalDistribution``: under Optuna a grid is one more categorical dimension, not a
product. ``num_samples`` is the number of trials.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
from service.search.base import FINISHED, Searcher
from service.spec import OptunaSpec, SpecError

EXTRA_HINT = "pip install 'gradsweep[optuna]'"
# the samplers named in OPTUNA_SAMPLERS (service.spec), by their Optuna class
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler",
            "gp": "GPSampler", "nsgaii": "NSGAIISampler", "qmc": "QMCSampler"}
JOURNAL = "optuna.journal"


class OptunaSearch(dict):
    """What :func:`optuna_search` returns: the spec's ``search`` dict, carrying the sampler
    instance (if one was given) to the sweep."""

    sampler_instance: Any = None


def optuna_search(sampler: Any = "tpe", seed: int | None = 0) -> OptunaSearch:
    """Search with Optuna: ``sampler`` is "tpe" (default), "random", "cmaes", "gp",
    "nsgaii" or "qmc", or an Optuna sampler instance (``optuna.samplers.CmaEsSampler(
    seed=0)``). Needs the ``optuna`` extra."""
    require_optuna()
    if isinstance(sampler, str):
        found = OptunaSearch(type="optuna", sampler=sampler, seed=seed)
    else:
        found = OptunaSearch(type="optuna", sampler=type(sampler).__name__, seed=None)
        found.sampler_instance = sampler
    return found


def require_optuna() -> None:
    """Raise SpecError naming the extra when optuna is not installed."""
    if importlib.util.find_spec("optuna") is None:
        raise SpecError(f"search: optuna_search needs Optuna, which is not installed "
                        f"({EXTRA_HINT})")


def distributions(space: dict) -> dict:
    """The Optuna distribution of each of the space's domains (see the module's docstring)."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    found = {}
    for name, domain in space.items():
        if domain.type in ("grid", "choice"):
            found[name] = CategoricalDistribution(list(domain.values))
        elif domain.type == "uniform":
            found[name] = FloatDistribution(domain.low, domain.high)
        elif domain.type == "loguniform":
            found[name] = FloatDistribution(domain.low, domain.high, log=True)
        elif domain.type == "randint":
            found[name] = IntDistribution(domain.low, domain.high - 1)
        else:  # pragma: no cover - the spec knows no other domain
            raise TypeError(f"no Optuna distribution for {domain!r}")
    return found


def suggest(trial, name: str, dist) -> Any:
    """``trial``'s value of ``name`` (drawn by the study's sampler if it has none yet)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def index_of(trial_id: str) -> int:
    """A trial id's index (its number in the study)."""
    return int(trial_id.split("_", 1)[0])


class OptunaSearcher(Searcher):
    """The searcher of :class:`OptunaSpec` (see the module's docstring)."""

    def __init__(self, spec: OptunaSpec, sampler_instance: Any = None):
        self.rule, self.instance = spec, sampler_instance

    def setup(self, spec, folder: Path | None = None, trials: list | None = None) -> None:
        require_optuna()
        import optuna

        from service.schedulers import is_scheduler_stop
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        super().setup(spec, folder, trials)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.journal = Path(folder) / JOURNAL
        storage = JournalStorage(JournalFileBackend(str(self.journal)))
        self.study = optuna.create_study(
            study_name=spec.name, storage=storage, load_if_exists=True,
            direction="minimize" if spec.mode == "min" else "maximize")
        self.dists = distributions(spec.space)
        self.metric = spec.metric
        if self.instance is not None and self.study.get_trials(deepcopy=False):
            self.instance.reseed_rng()    # a resumed instance must not replay its first draws
        for record in trials or []:       # ended while the driver that knew was dying
            if record.state.value in ("TERMINATED", "STOPPED", "ERROR"):
                self.on_complete(record.id, record.state, record.last_metrics,
                                 pruned=is_scheduler_stop(record.reason))

    def sampler(self, number: int):
        """The sampler for trial ``number``: the instance, or a fresh one of the named kind
        seeded from ``(seed, number)``."""
        if self.instance is not None:
            return self.instance
        seed = None if self.rule.seed is None else \
            int(np.random.SeedSequence([self.rule.seed, number]).generate_state(1)[0])
        return getattr(self.optuna.samplers, SAMPLERS[self.rule.sampler])(seed=seed)

    def suggest(self, index: int):
        if index >= self.spec.num_samples:
            return FINISHED
        asked = self.study.get_trials(deepcopy=False)
        self.study.sampler = self.sampler(index)
        if index < len(asked):
            # Asked before a driver died, not yet in the table; a driver killed in the middle
            # of the ask left some parameters unset: they are drawn now, the others kept.
            trial = self.optuna.Trial(self.study, asked[index]._trial_id)
            for name, dist in self.dists.items():
                suggest(trial, name, dist)
        else:
            trial = self.study.ask(fixed_distributions=self.dists)
            if trial.number != index:
                raise RuntimeError(f"study {self.study.study_name!r} has trial number "
                                   f"{trial.number} where the sweep expected {index}: was "
                                   f"{self.journal} written by another sweep?")
        return {name: trial.params[name] for name in self.spec.space}

    def _frozen(self, trial_id: str):
        trials = self.study.get_trials(deepcopy=False)
        index = index_of(trial_id)
        return trials[index] if index < len(trials) else None

    def on_result(self, trial_id: str, step: int, metrics: dict) -> None:
        value = metrics.get(self.metric)
        trial = self._frozen(trial_id)
        if trial is None or value is None or not math.isfinite(value) or \
                trial.state != self.optuna.trial.TrialState.RUNNING:
            return
        self.study._storage.set_trial_intermediate_value(trial._trial_id, step, float(value))

    def on_complete(self, trial_id: str, state: Any, metrics: dict,
                    pruned: bool = False) -> None:
        trial = self._frozen(trial_id)
        states = self.optuna.trial.TrialState
        if trial is None or trial.state != states.RUNNING:
            return                    # told already (a resumed driver tells each trial once)
        value = metrics.get(self.metric)
        finite = value is not None and math.isfinite(value)
        if state.value == "ERROR" or not finite:
            self.study.tell(trial.number, state=states.FAIL)
        elif pruned:
            self.study.tell(trial.number, state=states.PRUNED)
        else:
            self.study.tell(trial.number, float(value))
