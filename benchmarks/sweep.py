"""Overhead of a sweep: a grid of trivial trials through gradsweep on local Ray.

Each trial reports 10 times and checkpoints once at the end (a one-variable session, one
checkpoint kept), with TensorBoard event files and checkpoints on, 2 trials at a time on 1
CPU each. Ray is started once, before any clock starts (127.0.0.1, no dashboard); each
repeat is a fresh sweep in a fresh folder. Prints the median over repeats of:

- wall time: from building the sweep to ``run_sweep``'s return (Ray already up);
- per-trial overhead: what one trial costs a slot beyond the trial's own work,
  ``(wall - work / slots) * slots / trials`` (a trivial trial's own work is about 0);
- files per trial: every file in the sweep's folder (its own four included) / trials.

    python benchmarks/sweep.py [--trials 100] [--repeats 3] [--dir FOLDER]

``sweep_vs_tune.py`` reuses these pieces for the side-by-side comparison with Ray Tune.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import engine as en
from service import Sweep, cluster, grid
from service.driver import run_sweep

TRIALS = 100
REPORTS = 10
SLOTS = 2           # trials at a time, 1 CPU each (the embedded Ray gets SLOTS CPUs)


# ----------------------------------------------------------------- the trivial trial

def trivial_session() -> en.Session:
    """A session holding one small variable: what a trivial trial checkpoints."""
    weights = en.Variable(np.zeros(4, np.float32), name="w")
    sess = en.Session(seed=0)
    sess.attach(weights)
    return sess


def trivial_train(config: dict, trial) -> None:
    """10 reports (each after sleeping ``config["sleep"]`` seconds, default 0), then one
    checkpoint: besides the sleep, nothing but the service's own work."""
    sess = trivial_session()
    pause = config.get("sleep", 0.0)
    for step in range(REPORTS):
        if pause:
            time.sleep(pause)
        trial.report(step, loss=float(config["x"]) + step)
    trial.checkpoint(sess, REPORTS - 1)


def grid_space(trials: int, **fixed: object) -> dict[str, list]:
    """``trials`` trials: a grid over ``x`` (0, 1, ...) and one value of each ``fixed``."""
    return {"x": list(range(trials)), **{key: [value] for key, value in fixed.items()}}


# ----------------------------------------------------------------- measuring

@dataclass
class Measure:
    """One timed sweep: wall seconds (Ray already up) and the files it left per trial
    (``staged``: per trial, in a second copy outside the storage folder)."""

    seconds: float
    trials: int
    files_per_trial: float
    staged_per_trial: float = 0.0


def count_files(folder: str | os.PathLike) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def per_trial_overhead(seconds: float, trials: int, work_s: float = 0.0,
                       slots: int = SLOTS) -> float:
    """Seconds a slot spends per trial beyond the trials' own work (``work_s`` in all)."""
    return (seconds - work_s / slots) * slots / trials


def run_gradsweep(train: Callable, space: dict[str, list], storage: str, name: str,
                  **options) -> Measure:
    """Time one gradsweep sweep of ``train`` over the grid ``space`` (lists of values),
    SLOTS trials at a time; ``options`` go to the Sweep (e.g. keep_checkpoints=1)."""
    start = time.perf_counter()
    sweep = Sweep(name=name, train=train, space={k: grid(v) for k, v in space.items()},
                  metric="loss", mode="min", max_concurrent=SLOTS, **options)
    result = run_sweep(sweep, storage=storage, out=io.StringIO())
    status = result.exit_status
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"gradsweep sweep {name!r} failed (exit status {status})")
    trials = len(result.trials)
    return Measure(seconds, trials, count_files(Path(storage) / name) / trials)


@contextlib.contextmanager
def local_ray() -> Iterator[float]:
    """Start the one embedded Ray of a benchmark (SLOTS CPUs); yields ray.init's seconds.

    This module's train functions go to the workers by value (they may not find the file).
    """
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    start = time.perf_counter()
    with cluster.connect("local", num_cpus=SLOTS):
        yield time.perf_counter() - start


@contextlib.contextmanager
def scratch(folder: str | None) -> Iterator[str]:
    """A scratch folder for the sweeps' storage, removed afterwards unless given."""
    if folder is not None:
        os.makedirs(folder, exist_ok=True)
        yield os.path.abspath(folder)
        return
    with tempfile.TemporaryDirectory(prefix="gradsweep-bench-") as path:
        yield path


def median(values: list[float]) -> float:
    return statistics.median(values)


# ----------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="storage folder (default: a temporary one)")
    args = parser.parse_args(argv)
    with scratch(args.dir) as storage, local_ray() as init_s:
        measures = [run_gradsweep(trivial_train, grid_space(args.trials), storage,
                                  f"trivial-{r}", keep_checkpoints=1)
                    for r in range(args.repeats)]
    wall = median([m.seconds for m in measures])
    print(f"{args.trials} trivial trials ({REPORTS} reports, a checkpoint at the end, "
          f"keep_checkpoints=1), {SLOTS} at a time on local Ray (ray.init {init_s:.2f} s, "
          f"not counted); median of {args.repeats}:")
    print(f"  wall time          {wall:8.3f} s   (each: "
          f"{', '.join(f'{m.seconds:.3f}' for m in measures)})")
    print(f"  per-trial overhead {per_trial_overhead(wall, args.trials) * 1e3:8.1f} ms")
    print(f"  files per trial    {median([m.files_per_trial for m in measures]):8.2f}")


if __name__ == "__main__":
    main()
