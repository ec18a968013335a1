"""``Sweep``: the facade users build and run, above the driver (as Ray Tune's ``Tuner``).

    sweep = Sweep(name="triangle", train=train, space={...}, metric="loss", mode="min")
    result = sweep.run()

It validates the spec (:mod:`service.spec`, pure data), finds where ``train`` lives, and
hands both to the driver. :func:`load_sweep_file` imports a sweep file for the command line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable

from service.spec import (OPTUNA_SAMPLERS, Objective, SpecError, SweepSpec, TrialSpec, _Pending,
                          expand_trials, spec_dict, spec_hash, trial_count, validate_spec,
                          with_changes)


class Sweep:
    """A hyperparameter sweep: ``train(config, trial)`` run for every point of ``space``.

    Options (keyword arguments): ``stop`` (dict: ``max_steps``, ``time_budget_s``,
    ``metric_threshold``), ``num_samples``, ``seed``, ``max_concurrent``, ``resources``
    (``{"cpu": 1}``), ``max_failures`` (3), ``checkpoint_every`` (100 steps),
    ``keep_checkpoints`` (3), ``storage`` ("logs"), ``on_nan`` ("stop" or "keep").
    """

    def __init__(self, name: str, train: Callable, space: dict, metric: str,
                 mode: str = "min", **options: Any):
        _check_train(train)
        if not isinstance(space, dict):
            raise SpecError(f"space: must be a dict of hyperparameter -> domain, got "
                            f"{type(space).__name__}")
        raw_space = {}
        for key, domain in space.items():
            if not isinstance(domain, _Pending):
                raise SpecError(f"space.{key}: must be grid([...]), choice([...]), "
                                f"uniform(a, b), loguniform(a, b) or randint(a, b), got "
                                f"{domain!r}")
            raw_space[key] = {"type": domain.type, **domain.args}
        # an Optuna sampler instance stays with the sweep; the spec names its class
        self.sampler_instance = getattr(options.get("search"), "sampler_instance", None)
        self.spec: SweepSpec = validate_spec(dict(name=name, space=raw_space, metric=metric,
                                                  mode=mode, **options))
        search = self.spec.search
        if search is not None and search.sampler not in OPTUNA_SAMPLERS and \
                self.sampler_instance is None:
            raise SpecError(f"search.sampler: {search.sampler!r} names a sampler instance: "
                            "give it as optuna_search(sampler=...)")
        self.train = train
        self.source_file, self.train_name = _source_of(train)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def metric(self) -> str:
        return self.spec.metric

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def objective(self) -> Objective:
        return Objective(self.spec.metric, self.spec.mode)

    def replace(self, **changes: Any) -> "Sweep":
        """A copy with some options changed (``--set``), validated again."""
        clone = object.__new__(Sweep)
        clone.__dict__.update(self.__dict__)
        clone.spec = with_changes(self.spec, changes)
        return clone

    def spec_dict(self) -> dict:
        """The spec as plain JSON (what ``sweep.json`` stores)."""
        return spec_dict(self.spec)

    def spec_hash(self) -> str:
        """sha256 of the spec without run options: a changed hash refuses a relaunch."""
        return spec_hash(self.spec)

    def trials(self) -> list[TrialSpec]:
        """The grid/random trials of the spec, in order (see :func:`expand_trials`)."""
        return expand_trials(self.spec)

    def run(self, **run_options: Any):
        """Run (or resume) the sweep; returns a :class:`~service.results.SweepResult`
        whose ``exit_status`` is the command line's (0 ok, 1 some ERROR, 130 interrupted).

        Options: ``storage``, ``address`` ("local": an embedded Ray; or a cluster address),
        ``max_concurrent``, ``restart``, ``retry_errored``. Embedded local Ray and
        ``./logs`` by default.
        """
        from service.driver import run_sweep

        return run_sweep(self, **run_options)

    def __repr__(self) -> str:
        return (f"<Sweep {self.name!r}: {trial_count(self.spec)} trials, {self.metric} "
                f"({self.mode})>")


# ----------------------------------------------------------------- train and sweep files

def _check_train(train) -> None:
    if not callable(train):
        raise SpecError(f"train: must be a function train(config, trial), got "
                        f"{type(train).__name__}")
    try:
        inspect.signature(train).bind(None, None)
    except TypeError:
        raise SpecError(f"train: must accept two arguments (config, trial), "
                        f"{getattr(train, '__name__', train)!s}{inspect.signature(train)} "
                        "does not") from None
    except ValueError:
        pass  # builtins without a signature: let the call decide


def _source_of(train) -> tuple[str | None, str]:
    module = sys.modules.get(getattr(train, "__module__", None) or "")
    path = getattr(module, "__file__", None)
    return (os.path.abspath(path) if path else None), getattr(train, "__qualname__",
                                                             getattr(train, "__name__", "train"))
def load_sweep_file(path: str | os.PathLike) -> Sweep:
    """Import a sweep file and return the one :class:`Sweep` it defines.

    The file is imported under a private module name (its ``__main__`` block does not run)
    and registered to be pickled by value, so Ray workers that lack the file still get
    ``train``. Raises SpecError naming the file for anything that stops it from loading.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep file {str(path)!r} does not exist or is not a file")
    if path.suffix != ".py":
        raise SpecError(f"sweep file {str(path)!r} must be a Python file (.py)")
    path = path.resolve()
    name = "_gradsweep_sweep_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        sweep = _the_sweep(module, spec.loader, path)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    sweep.source_file = str(path)
    _pickle_by_value(module)
    return sweep


def _the_sweep(module, loader, path: Path) -> Sweep:
    """Run the sweep file's ``module`` and return its one Sweep; SpecError otherwise."""
    try:
        loader.exec_module(module)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
    except SyntaxError as err:
        raise SpecError(f"{path}:{err.lineno}: syntax error: {err.msg}") from None
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # noqa: BLE001 - any failure of user code is reported
        raise SpecError(f"{path}: importing the sweep file failed: "
                        f"{type(err).__name__}: {err}") from None
    sweeps = [(k, v) for k, v in vars(module).items() if isinstance(v, Sweep)]
    if not sweeps:
        raise SpecError(f"{path}: defines no Sweep (expected e.g. sweep = Sweep(...))")
    if len({id(v) for _, v in sweeps}) > 1:
        raise SpecError(f"{path}: defines more than one Sweep ("
                        f"{', '.join(k for k, _ in sweeps)}); keep one per file")
    return sweeps[0][1]


def _pickle_by_value(module) -> None:
    try:
        from ray import cloudpickle
    except ImportError:  # pragma: no cover - ray is a dependency
        return
    try:
        cloudpickle.register_pickle_by_value(module)
    except (ValueError, AttributeError):  # pragma: no cover - old cloudpickle
        pass

