"""Sweep specs: the search space, the options, and the trials they expand to.

A spec is validated by pydantic before anything runs or is written; a bad one raises
:class:`SpecError` with one message naming the field. The trial list is a pure function of
the spec: the same spec always gives the same trials with the same ids.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import itertools
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationError, field_validator, model_validator)

SPEC_FORMAT = 1
MAX_NAME_BYTES = 100        # a sweep's name is a folder name (file systems allow 255 bytes)
MAX_TRIALS = 100_000        # every trial is a row of state.json and a folder on storage


class SpecError(ValueError):
    """A sweep spec or sweep file that cannot run; the message names the field at fault."""


# ----------------------------------------------------------------- search space domains

Scalar = Union[bool, int, float, str, None]


class _Domain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Values(_Domain):
    values: list[Scalar] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _finite(cls, values):
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"values must be finite, got {v}")
        return values


class Grid(_Values):
    """Every value, in order: the sweep runs the product of all grids."""

    type: Literal["grid"] = "grid"


class Choice(_Values):
    """One value drawn uniformly per trial."""

    type: Literal["choice"] = "choice"


class _Interval(_Domain):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"bounds must be finite, got ({self.low}, {self.high})")
        if not self.low < self.high:
            raise ValueError(f"low must be less than high, got ({self.low}, {self.high})")
        return self


class Uniform(_Interval):
    """A float drawn uniformly from ``[low, high)``."""

    type: Literal["uniform"] = "uniform"


class LogUniform(_Interval):
    """A float whose logarithm is uniform: ``exp(U(log low, log high))``, ``0 < low``."""

    type: Literal["loguniform"] = "loguniform"

    @model_validator(mode="after")
    def _positive(self):
        if self.low <= 0:
            raise ValueError(f"low must be positive, got {self.low}")
        return self


class RandInt(_Domain):
    """An integer drawn uniformly from ``[low, high)``."""

    type: Literal["randint"] = "randint"
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low must be less than high, got ({self.low}, {self.high})")
        return self


Domain = Annotated[Union[Grid, Choice, Uniform, LogUniform, RandInt],
                   Field(discriminator="type")]
DOMAINS = {"grid": Grid, "choice": Choice, "uniform": Uniform, "loguniform": LogUniform,
           "randint": RandInt}


class _Pending:
    """A domain as written in a sweep file; validated with the rest of the spec."""

    def __init__(self, type_: str, **args):
        self.type, self.args = type_, args

    def __repr__(self) -> str:
        inner = ", ".join(repr(v) for v in self.args.values())
        return f"{self.type}({inner})"


def grid(values) -> _Pending:
    """Try every one of ``values`` (the sweep takes the product of its grids)."""
    return _Pending("grid", values=_as_list(values))


def choice(values) -> _Pending:
    """Draw one of ``values`` uniformly for each trial."""
    return _Pending("choice", values=_as_list(values))


def uniform(low: float, high: float) -> _Pending:
    """Draw a float uniformly from ``[low, high)`` for each trial."""
    return _Pending("uniform", low=low, high=high)


def loguniform(low: float, high: float) -> _Pending:
    """Draw a float log-uniformly from ``[low, high)`` (``low > 0``), e.g. learning rates."""
    return _Pending("loguniform", low=low, high=high)


def randint(low: int, high: int) -> _Pending:
    """Draw an integer uniformly from ``[low, high)`` for each trial."""
    return _Pending("randint", low=low, high=high)


def _as_list(values):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        return values  # pydantic names the wrong type
    return [v.item() if isinstance(v, np.generic) else v for v in values]


# ----------------------------------------------------------------- the spec

def check_name(name: str, what: str) -> str:
    """A sweep name or trial id used as a folder name: no separators, '..' or NUL."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty string")
    if "/" in name or "\\" in name or "\x00" in name or name in (".", "..") or ".." in name:
        raise ValueError(f"{what} {name!r} must not contain '/', '\\', '..' or NUL")
    if name.startswith("."):
        raise ValueError(f"{what} {name!r} must not start with '.'")
    if len(name.encode()) > MAX_NAME_BYTES:   # the sweep folder's name, with room to spare
        raise ValueError(f"{what} {name[:20]!r}... is {len(name.encode())} bytes long; at most "
                         f"{MAX_NAME_BYTES}")
    return name


class StopSpec(BaseModel):
    """When a trial ends before ``train`` returns: after ``max_steps`` steps (its budget:
    TERMINATED, as Ray Tune's stop criteria), or as a final decision (STOPPED) after
    ``time_budget_s`` seconds of its own running time or once the sweep's metric reaches
    ``metric_threshold`` (below it for mode ``min``, above for ``max``)."""

    # NaN and infinity mean nothing here, and would make sweep.json invalid JSON.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    max_steps: PositiveInt | None = None
    time_budget_s: PositiveFloat | None = None
    metric_threshold: float | None = None


class SweepSpec(BaseModel):
    """Everything that defines a sweep's trials and how they run (not ``train``'s body)."""

    # NaN and infinity mean nothing here, and would make sweep.json invalid JSON.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str
    space: dict[str, Domain] = Field(min_length=1)
    metric: str = Field(min_length=1)
    mode: Literal["min", "max"] = "min"
    stop: StopSpec = StopSpec()
    num_samples: PositiveInt = 1
    seed: NonNegativeInt = 0
    max_concurrent: PositiveInt | None = None
    resources: dict[str, PositiveFloat] = Field(default_factory=lambda: {"cpu": 1.0})
    max_failures: NonNegativeInt = 3
    checkpoint_every: PositiveInt = 100
    keep_checkpoints: PositiveInt = 3
    storage: str = "logs"
    on_nan: Literal["stop", "keep"] = "stop"

    @field_validator("name")
    @classmethod
    def _name(cls, name):
        return check_name(name, "name")

    @field_validator("space")
    @classmethod
    def _keys(cls, space):
        for key in space:
            if not key or "\x00" in key:
                raise ValueError(f"hyperparameter name {key!r} must be non-empty, without NUL")
        return space

    @field_validator("resources")
    @classmethod
    def _resources(cls, resources):
        if resources.get("cpu", 1.0) <= 0:
            raise ValueError("cpu must be positive")
        return {k.lower(): float(v) for k, v in resources.items()}

    @field_validator("storage")
    @classmethod
    def _storage(cls, storage):
        if not storage or "\x00" in storage:
            raise ValueError(f"storage {storage!r} must be a non-empty path without NUL")
        return storage

    @property
    def grid_points(self) -> int:
        """The product of the grids' sizes (1 without grids)."""
        return math.prod(len(d.values) for d in self.space.values() if isinstance(d, Grid))

    @model_validator(mode="after")
    def _size(self):
        # Counted before anything is expanded: an absurd num_samples or grid must be refused,
        # not enumerated.
        points = self.grid_points
        if points * self.num_samples > MAX_TRIALS:
            culprit = "num_samples" if self.num_samples > 1 else "space"
            raise ValueError(f"{culprit}: {points} grid point(s) x num_samples "
                             f"{self.num_samples} = {points * self.num_samples} trials; a sweep "
                             f"holds at most {MAX_TRIALS}")
        return self


# Options that describe how a run is executed, not what it computes: not in the hash.
RUN_OPTIONS = ("max_concurrent", "storage")


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its index in the expanded list, its id (a folder name) and its config."""

    index: int
    id: str
    config: dict


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in DOMAINS and not str(p).startswith(
            "function-after"))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown option"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"{loc}: {msg}" if loc else msg)
    # A union reports one error per member: keep the distinct messages in order.
    return "; ".join(dict.fromkeys(lines))


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
        data = dict(name=name, space=raw_space, metric=metric, mode=mode, **options)
        try:
            self.spec = SweepSpec.model_validate(data)
        except ValidationError as err:
            raise SpecError(_format_error(err)) from None
        self.train = train
        self._space_repr = {k: repr(v) for k, v in space.items()}
        self.source_file, self.train_name = _source_of(train)

    # -- accessors
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def metric(self) -> str:
        return self.spec.metric

    @property
    def mode(self) -> str:
        return self.spec.mode

    def replace(self, **changes: Any) -> "Sweep":
        """A copy with some options changed (``--set``), validated again."""
        data = self.spec.model_dump()
        for key, value in changes.items():
            head, _, rest = key.partition(".")
            if rest:
                if not isinstance(data.get(head), dict):
                    raise SpecError(f"{key}: unknown option")
                data[head] = {**data[head], rest: value}
            else:
                data[key] = value
        clone = object.__new__(Sweep)
        clone.__dict__.update(self.__dict__)
        try:
            clone.spec = SweepSpec.model_validate(data)
        except ValidationError as err:
            raise SpecError(_format_error(err)) from None
        return clone

    def spec_dict(self) -> dict:
        """The spec as plain JSON (what ``sweep.json`` stores)."""
        return json.loads(self.spec.model_dump_json())

    def spec_hash(self) -> str:
        """sha256 of the spec without run options: a changed hash refuses a relaunch."""
        data = {k: v for k, v in self.spec_dict().items() if k not in RUN_OPTIONS}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def trials(self) -> list[TrialSpec]:
        """The trials, in order: ``num_samples`` repeats of the grids' product, each trial's
        random values drawn from a generator seeded by ``(seed, index)``."""
        space = self.spec.space
        grid_keys = [k for k, d in space.items() if isinstance(d, Grid)]
        combos = list(itertools.product(*[space[k].values for k in grid_keys]))
        total = self.spec.num_samples * len(combos)
        width = len(str(max(total - 1, 0)))
        trials = []
        for index in range(total):
            fixed = dict(zip(grid_keys, combos[index % len(combos)]))
            rng = np.random.default_rng([self.spec.seed, index])
            config = {k: fixed[k] if k in fixed else sample(d, rng) for k, d in space.items()}
            trials.append(TrialSpec(index, trial_id(index, width, config, space), config))
        return trials

    def run(self, **run_options: Any):
        """Run (or resume) the sweep; returns a :class:`~service.results.SweepResult`.

        Options: ``storage``, ``address`` ("local": an embedded Ray; or a cluster address),
        ``max_concurrent``, ``restart``, ``retry_errored``. Embedded local Ray and
        ``./logs`` by default.
        """
        from service.driver import run_sweep
        result, _ = run_sweep(self, **run_options)   # the status is result.exit_status too
        return result

    def __repr__(self) -> str:
        count = self.spec.num_samples * self.spec.grid_points  # without expanding the trials
        return f"<Sweep {self.name!r}: {count} trials, {self.metric} ({self.mode})>"


def sample(domain, rng: np.random.Generator):
    """One value of a random domain (grids are expanded, not sampled)."""
    if isinstance(domain, Choice):
        return domain.values[int(rng.integers(len(domain.values)))]
    if isinstance(domain, Uniform):
        return float(rng.uniform(domain.low, domain.high))
    if isinstance(domain, LogUniform):
        return float(math.exp(rng.uniform(math.log(domain.low), math.log(domain.high))))
    if isinstance(domain, RandInt):
        return int(rng.integers(domain.low, domain.high))
    raise TypeError(f"cannot sample {domain!r}")


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+\-]")
MAX_ID_LENGTH = 120


def _display(value, sampled: bool) -> str:
    if sampled and isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return repr(value)


def trial_id(index: int, width: int, config: dict, space: dict) -> str:
    """``<index>_<key>=<value>,...``: readable, unique (the index), sorted by index."""
    parts = ",".join(f"{k}={_display(v, not isinstance(space[k], Grid))}"
                     for k, v in config.items())
    text = _UNSAFE.sub("_", f"{index:0{width}d}_{parts}")
    text = text.replace("..", "_.")
    if len(text) > MAX_ID_LENGTH:
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        text = f"{text[:MAX_ID_LENGTH - 11]}~{digest}".replace("~", "-")
    return text


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


# ----------------------------------------------------------------- sweep.json

def sweep_record(sweep: Sweep) -> dict:
    """What ``sweep.json`` holds: the spec as launched, its hash, and where ``train`` lives
    (the sweep file's absolute path and the function's name), so ``resume`` can find it."""
    return {"format": SPEC_FORMAT, "spec": sweep.spec_dict(), "spec_hash": sweep.spec_hash(),
            "source_file": sweep.source_file, "train_name": sweep.train_name,
            "created": time.time()}


def spec_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two spec dicts, run options left out."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        if not prefix and key in RUN_OPTIONS:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += spec_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return diffs
