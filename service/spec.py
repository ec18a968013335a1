"""Sweep specs: the search space, the options, and the trials they expand to.

A spec is validated by pydantic before anything runs or is written; a bad one raises
:class:`SpecError` with one message naming the field. The trial list is a pure function of
the spec: the same spec always gives the same trials with the same ids.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationError, field_validator, model_validator)

from service.names import check_folder_name

SPEC_FORMAT = 1
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

# ----------------------------------------------------------------- plug-in options

class AshaSpec(BaseModel):
    """``asha(grace_period=..., max_t=..., reduction_factor=4, brackets=1)`` in a spec."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    type: Literal["asha"] = "asha"
    grace_period: PositiveInt
    max_t: PositiveInt
    reduction_factor: float = Field(4.0, gt=1)
    brackets: PositiveInt = 1

    @model_validator(mode="after")
    def _order(self):
        if self.max_t < self.grace_period:
            raise ValueError(f"max_t ({self.max_t}) must be at least grace_period "
                             f"({self.grace_period})")
        return self


class MedianSpec(BaseModel):
    """``median_stopping(grace_period=..., min_samples=3)`` in a spec."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    type: Literal["median_stopping"] = "median_stopping"
    grace_period: PositiveInt
    min_samples: PositiveInt = 3


OPTUNA_SAMPLERS = ("tpe", "random", "cmaes", "gp", "nsgaii", "qmc")


class OptunaSpec(BaseModel):
    """``optuna_search(sampler="tpe", seed=0)`` in a spec; ``sampler`` is one of
    :data:`OPTUNA_SAMPLERS`, or the class name of a sampler instance given to
    ``optuna_search`` (which the sweep then carries)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["optuna"] = "optuna"
    sampler: str = "tpe"
    seed: NonNegativeInt | None = 0

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, sampler):
        if sampler not in OPTUNA_SAMPLERS and not sampler.endswith("Sampler"):
            raise ValueError(f"unknown sampler {sampler!r}: one of "
                             f"{', '.join(OPTUNA_SAMPLERS)}, or an Optuna sampler instance")
        return sampler


SchedulerSpec = Annotated[Union[AshaSpec, MedianSpec], Field(discriminator="type")]
# The discriminator tags of the unions, left out of the field names in error messages.
_TAGS = {*DOMAINS, "asha", "median_stopping", "optuna"}

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
    scheduler: SchedulerSpec | None = None
    search: OptunaSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name):
        return check_folder_name(name, "name")

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
        resources = {k.lower(): float(v) for k, v in resources.items()}
        resources.setdefault("cpu", 1.0)   # the one place a trial's default CPU is set
        if resources["cpu"] <= 0:
            raise ValueError("cpu must be positive")
        return resources

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
        loc = ".".join(str(p) for p in e["loc"] if p not in _TAGS and not str(p).startswith(
            "function-after"))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown option"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"{loc}: {msg}" if loc else msg)
    # A union reports one error per member: keep the distinct messages in order.
    return "; ".join(dict.fromkeys(lines))


def validate_spec(data: dict) -> SweepSpec:
    """``data`` as a :class:`SweepSpec`, or SpecError with one message naming the field."""
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_error(err)) from None


def with_changes(spec: SweepSpec, changes: dict[str, Any]) -> SweepSpec:
    """A copy of ``spec`` with options changed (``--set``: ``key`` or ``group.key``),
    validated again."""
    data = spec.model_dump()
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            if not isinstance(data.get(head), dict):
                raise SpecError(f"{key}: unknown option")
            data[head] = {**data[head], rest: value}
        else:
            data[key] = value
    return validate_spec(data)


def spec_dict(spec: SweepSpec) -> dict:
    """The spec as plain JSON (what ``sweep.json`` stores)."""
    return json.loads(spec.model_dump_json())


def spec_hash(spec: SweepSpec) -> str:
    """sha256 of the spec without run options: a changed hash refuses a relaunch. Options
    left unset (None) are left out too, so an option added later does not change the hash
    of a sweep launched before it existed."""
    data = {k: v for k, v in spec_dict(spec).items() if k not in RUN_OPTIONS and v is not None}
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def trial_count(spec: SweepSpec) -> int:
    """How many trials the spec runs (counted, not expanded): ``num_samples`` repeats of
    the grids' product, or ``num_samples`` trials of a model-based search (where a grid is
    one more categorical dimension)."""
    return spec.num_samples if spec.search is not None else spec.num_samples * spec.grid_points


def expand_trials(spec: SweepSpec) -> list[TrialSpec]:
    """The trials, in order: ``num_samples`` repeats of the grids' product, each trial's
    random values drawn from a generator seeded by ``(seed, index)``."""
    space = spec.space
    grid_keys = [k for k, d in space.items() if isinstance(d, Grid)]
    combos = list(itertools.product(*[space[k].values for k in grid_keys]))
    total = spec.num_samples * len(combos)
    width = id_width(total)
    trials = []
    for index in range(total):
        fixed = dict(zip(grid_keys, combos[index % len(combos)]))
        rng = np.random.default_rng([spec.seed, index])
        config = {k: fixed[k] if k in fixed else sample(d, rng) for k, d in space.items()}
        trials.append(TrialSpec(index, trial_id(index, width, config, space), config))
    return trials


def id_width(total: int) -> int:
    """The digits of a trial id's index in a sweep of ``total`` trials."""
    return len(str(max(total - 1, 0)))


@dataclass(frozen=True)
class Objective:
    """The sweep's metric and whether lower (``min``) or higher (``max``) is better.

    ``sign * value`` is lower-is-better in either mode: every ranking, threshold and
    comparison of the metric goes through it.
    """

    metric: str
    mode: str = "min"

    @property
    def sign(self) -> float:
        return 1.0 if self.mode == "min" else -1.0

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` is strictly better than ``b``."""
        return self.sign * a < self.sign * b

    def value(self, metrics: dict) -> float | None:
        """The metric's finite value in ``metrics``, or None."""
        value = metrics.get(self.metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            return None
        return value


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


# ----------------------------------------------------------------- sweep.json

def sweep_record(spec: SweepSpec, source_file: str | None, train_name: str) -> dict:
    """What ``sweep.json`` holds: the spec as launched, its hash, and where ``train`` lives
    (the sweep file's absolute path and the function's name), so ``resume`` can find it."""
    return {"format": SPEC_FORMAT, "spec": spec_dict(spec), "spec_hash": spec_hash(spec),
            "source_file": source_file, "train_name": train_name, "created": time.time()}


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
