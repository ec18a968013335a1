"""Model-based search: random search against TPE on the digits task, and the same TPE search
through Ray Tune's OptunaSearch for wall time, on one local Ray.

The task is ``experiments/digits.py``'s ``train`` (an MLP with ReLU hidden layers on
scikit-learn's 8x8 digits, batches of 64, 400 steps: the experiment's quick length;
``loss/val``, the cross-entropy on 360 validation images, reported once per epoch) over five
hyperparameters, two of them on a log scale::

    lr         loguniform(1e-4, 1)      optimizer  choice(adam, momentum)
    l2         loguniform(1e-6, 0.1)    depth      choice(1, 2)
    width      randint(8, 257)

A trial's value is its last ``loss/val`` (what the searcher is told); a trial that diverged
(NaN) counts as no value. "Best after k trials" is the lowest value among the first k trials
asked (trial indices 0 to k - 1).

1. Search: for each seed, one gradsweep sweep of 40 trials with ``optuna_search(sampler=
   "random", seed=s)`` and one with ``sampler="tpe"`` (the same Optuna machinery, two
   samplers); the medians over seeds of the best after 10, 20 and 40 trials, side by side.
   With one seed both searches draw their first 10 trials alike (TPE starts with 10 trials
   of Optuna's random sampler, seeded as random search's is), so the seeds pair them.
2. Wall time, after the searches: gradsweep's TPE search of seed 0 once more, then Ray
   Tune's ``OptunaSearch`` with Optuna's ``TPESampler(seed=0)`` over the same space
   (``tune.loguniform`` etc.), ``max_concurrent_trials=2``, with its defaults and with
   ``reuse_actors=True``, back to back. The same ``train`` runs inside a function trainable
   whose ``trial`` turns reports into ``tune.report`` calls; both systems keep one
   checkpoint, taken at the last step. Each trial times its own training (in the worker,
   after the data set's imports), so that the overhead per trial, ``(wall - work / 2) * 2 /
   trials``, compares the systems although their searches propose different trials.

Targets: TPE's median best after 40 trials below random's; TPE's median best after 20 no
worse than random's after 40 by more than the seeds' spread (the median absolute deviation
of random's best after 40); gradsweep's wall time at most 1/5 of Tune's (its defaults).

    python benchmarks/search.py                # 10 seeds (6 minutes quiet, 12 under load)
    python benchmarks/search.py --seeds 5      # the issue's minimum
    python benchmarks/search.py --quick        # 2 seeds x 8 trials, Tune 8 trials (smoke)

Everything runs 2 trials at a time on 1 CPU each, one BLAS thread per trial.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass

import numpy as np

import service
from service import Sweep, optuna_search
from service.driver import run_sweep
from service.trial import Trial

from engine_step import blas_description     # this script's folder
from sweep import SLOTS, local_ray, per_trial_overhead, scratch
from sweep_vs_tune import TuneTrial, experiment_module, fit_quietly


def quick_digits():
    """``experiments/digits.py`` at its quick length (400 steps), read from the environment
    when the experiment is imported."""
    saved = os.environ.get("GRADSWEEP_QUICK")
    os.environ["GRADSWEEP_QUICK"] = "1"
    try:
        return experiment_module("digits")
    finally:
        if saved is None:
            del os.environ["GRADSWEEP_QUICK"]
        else:
            os.environ["GRADSWEEP_QUICK"] = saved


_digits = quick_digits()
digits_train, STEPS = _digits.train, _digits.STEPS
METRIC, MODE = "loss/val", "min"
TRAIN_SEED = 0                  # every trial initialises and batches alike: only the search varies
# name: (domain, arguments), built with gradsweep's and with Tune's function of that name
SPACE = {"lr": ("loguniform", 1e-4, 1.0), "l2": ("loguniform", 1e-6, 1e-1),
         "width": ("randint", 8, 257), "depth": ("choice", [1, 2]),
         "optimizer": ("choice", ["adam", "momentum"])}
SAMPLERS = {"random": "random", "tpe": "TPE"}     # optuna_search's name: label
WORK_ENV = "GRADSWEEP_BENCH_WORK"   # the folder where trials write their training's seconds
TARGET_WALL = 1 / 5


def space_of(module) -> dict:
    """SPACE with ``module``'s domain functions (``service`` or ``ray.tune``)."""
    return {name: getattr(module, kind)(*args) for name, (kind, *args) in SPACE.items()}


# ----------------------------------------------------------------- the trial

def search_train(config: dict, trial) -> None:
    """The digits trial at ``config`` (seed TRAIN_SEED); writes how long its training took
    (after the data set's imports, which a fresh worker process pays once) to a file of its
    own in ``$GRADSWEEP_BENCH_WORK``."""
    import sklearn.datasets  # noqa: F401 - imported before the clock starts

    start = time.perf_counter()
    try:
        digits_train({**config, "seed": TRAIN_SEED}, trial)
    finally:
        path = os.path.join(os.environ[WORK_ENV], uuid.uuid4().hex)
        with open(path, "w") as f:
            f.write(repr(time.perf_counter() - start))


def work_seconds(folder: str) -> float:
    """The training seconds written by every trial since the last call (whose files it
    removes)."""
    total = 0.0
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        with open(path) as f:
            total += float(f.read())
        os.remove(path)
    return total


class SteppedTuneTrial(TuneTrial):
    """The ``trial`` of ``search_train`` inside Tune: gradsweep's own ``steps`` loop (so both
    systems run and evaluate the same steps), one checkpoint at the last step."""

    def steps(self, sess, total: int, **options):
        self._final = total - 1
        return Trial.steps(self, sess, total, **options)

    def should_checkpoint(self, step: int) -> bool:
        return step == self._final


def tune_trainable(config: dict) -> None:
    """A Tune function trainable running ``search_train``."""
    trial = SteppedTuneTrial()
    search_train(config, trial)
    trial.close()


# ----------------------------------------------------------------- runs

@dataclass
class Run:
    """One search: its trials' values in the order they were asked (NaN: no value), wall
    seconds (Ray already up) and the trials' training seconds in all."""

    label: str
    values: list[float]
    seconds: float
    work: float

    def best_after(self, k: int) -> float:
        finite = [v for v in self.values[:k] if math.isfinite(v)]
        return min(finite) if finite else math.inf


def run_gradsweep(sampler: str, seed: int, trials: int, storage: str, work: str,
                  tag: str = "") -> Run:
    name = f"{sampler}-{seed}{tag}"
    start = time.perf_counter()
    sweep = Sweep(name=name, train=search_train, space=space_of(service), metric=METRIC,
                  mode=MODE, search=optuna_search(sampler=sampler, seed=seed),
                  num_samples=trials, max_concurrent=SLOTS, checkpoint_every=STEPS,
                  keep_checkpoints=1)
    result = run_sweep(sweep, storage=storage, out=io.StringIO())
    seconds = time.perf_counter() - start
    if result.exit_status != 0:
        raise RuntimeError(f"gradsweep sweep {name!r} failed (exit status "
                           f"{result.exit_status}):\n{result.table()}")
    ordered = sorted(result.trials, key=lambda t: t.index)
    if [t.index for t in ordered] != list(range(trials)):
        raise RuntimeError(f"sweep {name!r}: trial indices {[t.index for t in ordered]}")
    values = [float(t.last_metrics.get(METRIC, math.nan)) for t in ordered]
    return Run(f"gradsweep {SAMPLERS[sampler]}", values, seconds, work_seconds(work))


def run_tune(seed: int, trials: int, storage: str, work: str, *, reuse_actors: bool) -> Run:
    """Ray Tune with OptunaSearch (TPE, ``seed``) over the same space, SLOTS trials at a
    time on 1 CPU each, one checkpoint kept; Tune's defaults otherwise."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    name = f"tune-tpe-{seed}" + ("-reuse-actors" if reuse_actors else "")
    start = time.perf_counter()
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed), metric=METRIC,
                            mode=MODE)
    tuner = tune.Tuner(
        tune.with_resources(tune_trainable, {"cpu": 1}),
        param_space=space_of(tune),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=trials,
                                    max_concurrent_trials=SLOTS, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    results = fit_quietly(tuner, name)
    seconds = time.perf_counter() - start
    # Tune tags its trials with a counter in the order the searcher was asked ("1_lr=...")
    ordered = sorted(results, key=lambda r: int(r.metrics["experiment_tag"].split("_", 1)[0]))
    values = [float(r.metrics.get(METRIC, math.nan)) for r in ordered]
    label = "Tune TPE" + (" reuse_actors" if reuse_actors else "")
    return Run(label, values, seconds, work_seconds(work))


# ----------------------------------------------------------------- printing

def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def spread(values: list[float]) -> float:
    """Median absolute deviation from the median."""
    middle = statistics.median(values)
    return statistics.median(abs(v - middle) for v in values)


def print_search(runs: dict[str, list[Run]], budgets: list[int]) -> dict:
    """The side-by-side table; returns {(sampler, k): [best after k, one per seed]}."""
    best = {(s, k): [run.best_after(k) for run in runs[s]] for s in SAMPLERS for k in budgets}
    seeds = len(runs["tpe"])
    print(f"best {METRIC} after k trials (lower is better): median over {seeds} seeds "
          "[lowest-highest]\n")
    print(f"{'trials':>6s}  " + "  ".join(f"{label:>25s}" for label in SAMPLERS.values())
          + "  TPE - random")
    for k in budgets:
        cells = [f"{statistics.median(best[s, k]):.4f} [{min(best[s, k]):.4f}-"
                 f"{max(best[s, k]):.4f}]" for s in SAMPLERS]
        gap = statistics.median(best["tpe", k]) - statistics.median(best["random", k])
        print(f"{k:6d}  " + "  ".join(f"{c:>25s}" for c in cells) + f"  {gap:+12.4f}")
    last = budgets[-1]
    for s, label in SAMPLERS.items():
        print(f"  {label:6s} per seed after {last}: "
              + ", ".join(f"{v:.4f}" for v in best[s, last]))
    # Paired: TPE's first trials (its random start-up, seeded alike) are random search's.
    wins = sum(t < r for t, r in zip(best["tpe", last], best["random", last]))
    print(f"  TPE below random after {last} in {wins} of {seeds} seeds")
    return best


def print_targets(best: dict, budgets: list[int], wall_ratio: float) -> None:
    half, last = budgets[-2], budgets[-1]
    tpe_last = statistics.median(best["tpe", last])
    random_last = statistics.median(best["random", last])
    tpe_half = statistics.median(best["tpe", half])
    tolerance = spread(best["random", last])
    print(f"TPE after {last} < random after {last}:         {tpe_last:.4f} vs "
          f"{random_last:.4f}  {mark(tpe_last < random_last)}")
    print(f"TPE after {half} matches random after {last}:   {tpe_half:.4f} vs "
          f"{random_last:.4f} (+ spread {tolerance:.4f} = {random_last + tolerance:.4f})  "
          f"{mark(tpe_half <= random_last + tolerance)}  (strictly no worse: "
          f"{mark(tpe_half <= random_last)})")
    print(f"gradsweep TPE wall / Tune TPE wall:       {wall_ratio:.3f}  "
          f"{mark(wall_ratio <= TARGET_WALL)} (target <= 1/{round(1 / TARGET_WALL)})")


def print_walls(walls: list[Run], budgets: list[int]) -> None:
    ours = walls[0].seconds
    print(f"{'run (TPE, seed 0)':24s} {'wall s':>8s} {'work s':>8s} {'overhead/trial':>15s} "
          + " ".join(f"{f'best@{k}':>9s}" for k in budgets) + f" {'gradsweep/this':>15s}")
    for run in walls:
        overhead = per_trial_overhead(run.seconds, len(run.values), run.work)
        print(f"{run.label:24s} {run.seconds:8.2f} {run.work:8.2f} {overhead * 1e3:12.1f} ms "
              + " ".join(f"{run.best_after(k):9.4f}" for k in budgets)
              + f" {ours / run.seconds:15.3f}")


# ----------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 seeds x 8 trials, Tune 8 trials")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per sampler (10)")
    parser.add_argument("--trials", type=int, default=None, help="trials per search (40)")
    parser.add_argument("--dir", default=None, help="storage folder (default: a temporary one)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 10)
    trials = args.trials or (8 if args.quick else 40)
    budgets = [trials // 4, trials // 2, trials]
    if budgets[0] < 1:
        parser.error("--trials: at least 4")
    load_before = os.getloadavg()[0]
    runs: dict[str, list[Run]] = {s: [] for s in SAMPLERS}
    began = time.perf_counter()
    with scratch(args.dir) as storage:
        work = os.path.join(storage, "work")
        os.makedirs(work, exist_ok=True)
        os.environ[WORK_ENV] = work        # before Ray starts: its workers inherit it
        from ray import cloudpickle

        for module in ("sweep_vs_tune", __name__):
            cloudpickle.register_pickle_by_value(sys.modules[module])
        with local_ray() as init_s:
            print(f"local Ray up in {init_s:.2f} s (not counted); {SLOTS} trials at a time, "
                  "1 CPU each", file=sys.stderr, flush=True)
            for seed in range(seeds):
                # the order rotates with the seed, so a burst of outside load hits both
                order = list(SAMPLERS)
                for sampler in order[seed % 2:] + order[:seed % 2]:
                    run = run_gradsweep(sampler, seed, trials, storage, work)
                    runs[sampler].append(run)
                    print(f"  {sampler:6s} seed {seed}: {run.seconds:7.2f} s, best "
                          f"{run.best_after(trials):.4f}", file=sys.stderr, flush=True)
            # wall times: gradsweep's TPE search of seed 0 once more, then Tune's, back to back
            walls = [run_gradsweep("tpe", 0, trials, storage, work, tag="-wall")]
            for reuse in (False, True):
                walls.append(run_tune(0, trials, storage, work, reuse_actors=reuse))
            for run in walls:
                print(f"  {run.label}: {run.seconds:.2f} s", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]

    print(f"BLAS: {blas_description()}; numpy {np.__version__}")
    print(f"digits (experiments/digits.py), {STEPS} steps of 64 images, {METRIC} once per "
          f"epoch; {len(SPACE)} hyperparameters: "
          + ", ".join(f"{n} {k}{tuple(a) if k != 'choice' else a[0]}"
                      for n, (k, *a) in SPACE.items()))
    print(f"{trials} trials per search, {SLOTS} at a time; {seeds} seeds per sampler; "
          f"{time.perf_counter() - began:.0f} s in all; load average {load_before:.2f} "
          f"before, {load_after:.2f} after\n")
    best = print_search(runs, budgets)
    print()
    print_walls(walls, budgets)
    print()
    print_targets(best, budgets, walls[0].seconds / walls[1].seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
