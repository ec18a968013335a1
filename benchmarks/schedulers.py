"""Early stopping: ASHA in gradsweep and Ray Tune's AsyncHyperBandScheduler, on one local Ray.

One embedded Ray (127.0.0.1, no dashboard, 2 CPUs) is started once, before any clock starts;
every run takes 2 trials at a time on 1 CPU each. In one run of this script, over one grid of
27 configurations of the digits task (``experiments/digits.py``'s ``train``: an MLP with one
ReLU hidden layer on scikit-learn's 8x8 digits, Adam, 2000 steps of 64 images, ``accuracy/val``
reported once per epoch of 16 steps; lr 0.001 / 0.01 / 0.1 x width 16 / 64 / 256 x L2 0 /
1e-4 / 1e-3):

1. gradsweep without a scheduler: the whole grid;
2. gradsweep with ``asha(grace_period=100, reduction_factor=3, max_t=2000)`` (rungs at steps
   100, 300 and 900);
3. Ray Tune with ``AsyncHyperBandScheduler`` and the same grace period, reduction factor and
   max_t (``time_attr="step"``, metric ``accuracy/val``, mode max), ``max_concurrent_trials=2``,
   with its defaults and with ``reuse_actors=True``. The same ``train`` runs inside a function
   trainable whose ``trial`` hands each report to ``tune.report`` at once, so Tune decides on
   the step just run as gradsweep does (the last step's report carries the final checkpoint).

Both systems keep one checkpoint, taken at the last step (gradsweep also checkpoints a trial
when it stops it).

Printed per run: the best ``accuracy/val`` (each trial ranked by its last reported value),
the trials' steps (the sum of last reported step + 1), the steps their loops actually ran
(counted in the workers), where the trials ended, and the wall time (Ray already up). Then
the ratios against the targets: ASHA's best within 0.5 points of the grid's, ASHA's steps at
most 40% of the grid's, gradsweep-ASHA's wall time at most 1/3 of Tune-ASHA's. Last, ASHA
replayed on the grid run's learning curves, in the grid's order and in ``--shuffles`` random
orders (the service's rule, 2 trials at a time, each trial at the speed it ran in the grid
run): what the order of the trials does to the steps saved.

``--trivial``: the same 27-trial ASHA with trials that do no work per step (a made-up
``accuracy/val`` curve ranked by the configuration), so only the systems' overhead counts;
target gradsweep / Tune <= 1/20.

    python benchmarks/schedulers.py              # the digits runs (about 3 minutes)
    python benchmarks/schedulers.py --trivial    # the overhead runs (about 2 minutes)
    python benchmarks/schedulers.py --quick      # digits, 400 steps, max_t 400

Most of the time is Tune's default run (a fresh actor per trial), which slows most when the
machine is busy: 2-5 minutes for ``--quick`` too.

The runs go one after the other, once each: ASHA's verdicts depend on the order in which
trials reach a rung, which timing decides when 2 trials run at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import io
import itertools
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service import Sweep, asha, grid
from service.driver import run_sweep
from service.schedulers import Stop, make_scheduler
from service.trial import Trial, read_results

from engine_step import blas_description     # this script's folder
from sweep import SLOTS, local_ray, scratch, trivial_session
from sweep_vs_tune import TuneTrial, experiment_module, fit_quietly

# digits.py reads --quick from the command line itself: 400 steps instead of 2000
_digits = experiment_module("digits")
digits_train, STEPS = _digits.train, _digits.STEPS
EVAL_EVERY = 16                 # digits: 1077 training images // 64 a batch
METRIC, MODE = "accuracy/val", "max"
SPACE = {"lr": [0.001, 0.01, 0.1], "width": [16, 64, 256], "l2": [0.0, 1e-4, 1e-3]}
FIXED = {"depth": 1, "optimizer": "adam", "seed": 0}
GRACE_PERIOD, REDUCTION_FACTOR, MAX_T = 100, 3, STEPS
ASHA = asha(grace_period=GRACE_PERIOD, max_t=MAX_T, reduction_factor=REDUCTION_FACTOR)
TALLY_ENV = "GRADSWEEP_BENCH_TALLY"     # the folder where trials count the steps they ran
TARGETS = {"best": 0.5, "steps": 0.40, "wall": 1 / 3, "trivial_wall": 1 / 20}


# ----------------------------------------------------------------- the trials

def configs() -> list[dict]:
    """The grid's configurations in gradsweep's order (the last key of SPACE varies fastest)."""
    return [{**dict(zip(SPACE, values)), **FIXED} for values in itertools.product(*SPACE.values())]


class CountedTrial:
    """A trial (gradsweep's or Tune's) whose ``steps`` loop writes, before each step, how many
    steps it has handed out into a file of its own in ``$GRADSWEEP_BENCH_TALLY``: the count
    survives a trial whose process is killed mid-loop (Tune ends a stopped trial's actor)."""

    def __init__(self, trial):
        self._trial = trial

    def __getattr__(self, name: str):
        return getattr(self._trial, name)

    def steps(self, sess, total: int, *, eval_every: int | None = None):
        fd = os.open(os.path.join(os.environ[TALLY_ENV], uuid.uuid4().hex),
                     os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for ran, item in enumerate(self._trial.steps(sess, total, eval_every=eval_every),
                                       1):
                os.pwrite(fd, b"%12d" % ran, 0)
                yield item
        finally:
            os.close(fd)


def digits_asha_train(config: dict, trial) -> None:
    """``experiments/digits.py``'s train, its steps counted."""
    digits_train(config, CountedTrial(trial))


def made_up_accuracy(config: dict, step: int) -> float:
    """A learning curve ranked by the configuration (best: lr 0.01, width 64, no L2)."""
    quality = 0.95 - 0.05 * abs(math.log10(config["lr"]) + 2) \
        - 0.01 * abs(math.log2(config["width"] / 64)) - 10 * config["l2"]
    return quality * (1 - math.exp(-(step + 1) / 300))


def trivial_asha_train(config: dict, trial) -> None:
    """The digits trials' loop and reports without the work: STEPS steps, ``accuracy/val``
    every EVAL_EVERY steps, a one-variable checkpoint at the end."""
    sess = trivial_session()
    for step, evaluate in CountedTrial(trial).steps(sess, STEPS, eval_every=EVAL_EVERY):
        if evaluate:
            trial.report(step, {METRIC: made_up_accuracy(config, step)})


def steps_ran(folder: str) -> int:
    """The steps counted by every trial since the last call (whose files it removes)."""
    total = 0
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            total += int(f.read() or 0)
        os.remove(path)
    return total


# ----------------------------------------------------------------- one run

@dataclass
class Run:
    """One timed run: wall seconds (Ray already up) and, per trial, the last reported step
    and value of the metric."""

    label: str
    seconds: float
    last: list[tuple[int, float]]     # (last step, last accuracy/val), one per trial
    ran: int = 0                      # steps the trials' loops ran, counted in the workers
    curves: list[list[tuple[int, float]]] = field(default_factory=list)  # gradsweep: by index
    seconds_per_step: list[float] = field(default_factory=list)        # gradsweep: by index

    @property
    def best(self) -> float:
        return max(value for _, value in self.last)

    @property
    def steps(self) -> int:
        return sum(step + 1 for step, _ in self.last)

    @property
    def ended(self) -> str:
        """How many trials ended at each last step, e.g. ``111: 17, 303: 5, 1999: 5``."""
        counts = sorted(Counter(step for step, _ in self.last).items())
        return ", ".join(f"{step}: {n}" for step, n in counts)


def make_sweep(train: Callable, name: str, scheduler: dict | None) -> Sweep:
    return Sweep(name=name, train=train,
                 space={**{k: grid(v) for k, v in SPACE.items()},
                        **{k: grid([v]) for k, v in FIXED.items()}},
                 metric=METRIC, mode=MODE, max_concurrent=SLOTS, checkpoint_every=STEPS,
                 keep_checkpoints=1, scheduler=scheduler)


def run_gradsweep(train: Callable, storage: str, name: str, scheduler: dict | None) -> Run:
    start = time.perf_counter()
    sweep = make_sweep(train, name, scheduler)
    with contextlib.redirect_stderr(io.StringIO()):   # a line per stopped trial
        result = run_sweep(sweep, storage=storage, out=io.StringIO())
    seconds = time.perf_counter() - start
    if result.exit_status != 0:
        raise RuntimeError(f"gradsweep sweep {name!r} failed (exit status "
                           f"{result.exit_status}):\n{result.table()}")
    run = Run(name, seconds, [(t.last_step, t.last_metrics[METRIC]) for t in result.trials])
    for t in sorted(result.trials, key=lambda t: t.index):
        rows = read_results(result.paths.trial(t.id).results_jsonl)
        run.curves.append([(row["step"], row["metrics"][METRIC]) for row in rows])
        run.seconds_per_step.append((rows[-1]["time"] - rows[0]["time"])
                                    / max(1, rows[-1]["step"] - rows[0]["step"]))
    return run


# ----------------------------------------------------------------- ASHA replayed

def replay_asha(grid_run: Run, scheduler: dict, order: list[int]) -> tuple[float, float]:
    """ASHA on the learning curves of the grid run, trials started in ``order``: the
    service's own rule, SLOTS trials at a time, each trial taking the time per step it took
    in the grid run (no overhead). Returns (steps / the grid's steps, best last value)."""
    sweep = make_sweep(digits_asha_train, "replay", scheduler)
    rule = make_scheduler(sweep.spec)
    rule.setup(sweep.objective, [str(i) for i in order])
    curves, per_step = grid_run.curves, grid_run.seconds_per_step
    waiting, events, last = list(order), [], []

    def start(now: float) -> None:
        if waiting:
            i = waiting.pop(0)
            heapq.heappush(events, (now + per_step[i] * (curves[i][0][0] + 1), i, 0))

    for _ in range(SLOTS):
        start(0.0)
    while events:
        now, i, k = heapq.heappop(events)
        step, value = curves[i][k]
        verdict = rule.on_result(str(i), step, {METRIC: value}, sync=True)
        if isinstance(verdict, Stop) or k == len(curves[i]) - 1:
            last.append((step, value))
            start(now)
        else:
            heapq.heappush(events, (now + per_step[i] * (curves[i][k + 1][0] - step), i, k + 1))
    return sum(step + 1 for step, _ in last) / grid_run.steps, max(v for _, v in last)


def print_replay(grid_run: Run, scheduler: dict, shuffles: int) -> None:
    trials = len(grid_run.curves)
    steps, best = replay_asha(grid_run, scheduler, list(range(trials)))
    rng = np.random.default_rng(0)
    shuffled = np.array([replay_asha(grid_run, scheduler, list(rng.permutation(trials)))
                         for _ in range(shuffles)])
    points = (shuffled[:, 1] - grid_run.best) * 100
    print(f"ASHA replayed on the grid run's curves (the same rule, {SLOTS} at a time, each "
          f"trial's own time per step, no overhead): grid order: steps / grid {steps:.3f}, "
          f"best - grid best {(best - grid_run.best) * 100:+.2f} points; {shuffles} shuffled "
          f"orders: steps / grid median {np.median(shuffled[:, 0]):.3f} "
          f"({shuffled[:, 0].min():.3f}-{shuffled[:, 0].max():.3f}), best - grid best median "
          f"{np.median(points):+.2f} points (worst {points.min():+.2f})")


class AshaTuneTrial(TuneTrial):
    """The ``trial`` a train function gets inside Tune here: each report reaches
    ``tune.report`` at once (the scheduler decides on the step just run, as gradsweep's does),
    except the last step's, which waits for the checkpoint taken right after it. ``steps`` is
    gradsweep's own loop, so both systems run and evaluate the same steps."""

    def __init__(self):
        super().__init__()
        self._final: int | None = None

    def steps(self, sess, total: int, *, eval_every: int | None = None):
        self._final = total - 1
        return Trial.steps(self, sess, total, eval_every=eval_every)

    def should_checkpoint(self, step: int) -> bool:
        return step == self._final

    def report(self, step, metrics=None, /, **named) -> None:
        super().report(step, metrics, **named)     # held ...
        if step != self._final:
            self.close()                           # ... and sent now


def asha_trainable(train: Callable) -> Callable[[dict], None]:
    """A Tune function trainable running ``train(config["point"], trial)`` with an
    AshaTuneTrial."""
    def trainable(config: dict) -> None:
        trial = AshaTuneTrial()
        train(config["point"], trial)
        trial.close()

    trainable.__name__ = train.__name__
    return trainable


def run_tune(train: Callable, storage: str, name: str, *, reuse_actors: bool) -> Run:
    from ray import tune
    from ray.tune.schedulers import AsyncHyperBandScheduler

    start = time.perf_counter()
    scheduler = AsyncHyperBandScheduler(time_attr="step", grace_period=GRACE_PERIOD,
                                        reduction_factor=REDUCTION_FACTOR, max_t=MAX_T,
                                        brackets=1)
    tuner = tune.Tuner(
        tune.with_resources(asha_trainable(train), {"cpu": 1}),
        # one grid over whole configurations, so that trials start in gradsweep's order (Tune
        # orders a grid over several keys by their names, the first name varying fastest)
        param_space={"point": tune.grid_search(configs())},
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, scheduler=scheduler,
                                    max_concurrent_trials=SLOTS, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    results = fit_quietly(tuner, name)
    seconds = time.perf_counter() - start
    return Run(name, seconds, [(int(r.metrics["step"]), r.metrics[METRIC]) for r in results])


# ----------------------------------------------------------------- main

def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def print_runs(runs: list[Run]) -> None:
    print(f"{'run':24s} {'best val acc':>12s} {'steps':>7s} {'ran':>7s} {'wall s':>8s}  "
          "trials ending at step: count")
    for run in runs:
        print(f"{run.label:24s} {run.best:12.4f} {run.steps:7d} {run.ran:7d} "
              f"{run.seconds:8.2f}  {run.ended}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="digits trials of 400 steps (max_t 400) instead of 2000")
    parser.add_argument("--trivial", action="store_true",
                        help="ASHA with trials that do no work: the systems' overhead alone")
    parser.add_argument("--shuffles", type=int, default=200,
                        help="ASHA replayed on the grid run's curves in this many orders")
    parser.add_argument("--dir", default=None, help="storage folder (default: a temporary one)")
    args = parser.parse_args(argv)
    train = trivial_asha_train if args.trivial else digits_asha_train
    plan = [("Tune ASHA", False), ("Tune ASHA reuse_actors", True)]
    load_before = os.getloadavg()[0]
    runs: list[Run] = []
    with scratch(args.dir) as storage:
        tally = os.path.join(storage, "tally")
        os.makedirs(tally, exist_ok=True)
        os.environ[TALLY_ENV] = tally      # before Ray starts: its workers inherit it
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules["sweep_vs_tune"])
        with local_ray() as init_s:
            print(f"local Ray up in {init_s:.2f} s (not counted); {SLOTS} trials at a time, "
                  "1 CPU each", file=sys.stderr, flush=True)
            kinds = [("gradsweep ASHA", ASHA)]
            if not args.trivial:
                kinds.insert(0, ("gradsweep grid", None))
            for label, scheduler in kinds:
                runs.append(run_gradsweep(train, storage, label.replace(" ", "-"), scheduler))
                runs[-1].label, runs[-1].ran = label, steps_ran(tally)
                print(f"  {label}: {runs[-1].seconds:.2f} s", file=sys.stderr, flush=True)
            for label, reuse in plan:
                runs.append(run_tune(train, storage, label.replace(" ", "-").replace("_", "-"),
                                     reuse_actors=reuse))
                runs[-1].label, runs[-1].ran = label, steps_ran(tally)
                print(f"  {label}: {runs[-1].seconds:.2f} s", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]

    task = "trivial trials (no work per step)" if args.trivial else \
        "digits (experiments/digits.py, Adam)"
    print(f"BLAS: {blas_description()}; numpy {np.__version__}")
    print(f"{task}: {len(runs[0].last)} trials, {STEPS} steps each, {METRIC} every "
          f"{EVAL_EVERY} steps; ASHA grace_period {GRACE_PERIOD}, reduction_factor "
          f"{REDUCTION_FACTOR}, max_t {MAX_T}; {SLOTS} trials at a time; one run each; load "
          f"average {load_before:.2f} before, {load_after:.2f} after\n")
    print_runs(runs)
    by = {run.label: run for run in runs}
    ours, tune_default, tune_reuse = by["gradsweep ASHA"], by["Tune ASHA"], \
        by["Tune ASHA reuse_actors"]
    print()
    if not args.trivial:
        full = by["gradsweep grid"]
        points = (ours.best - full.best) * 100
        fraction = ours.steps / full.steps
        print(f"ASHA best - grid best:                 {points:+.2f} points  "
              f"{mark(points >= -TARGETS['best'])} (target >= -{TARGETS['best']})")
        print(f"ASHA steps / grid steps:               {fraction:.3f}  "
              f"{mark(fraction <= TARGETS['steps'])} (target <= {TARGETS['steps']}; steps "
              f"ran: {ours.ran / full.ran:.3f})")
        print(f"Tune ASHA best - grid best:            "
              f"{(tune_default.best - full.best) * 100:+.2f} points; Tune ASHA steps / grid "
              f"steps: {tune_default.steps / full.steps:.3f}")
    target = TARGETS["trivial_wall" if args.trivial else "wall"]
    ratio = ours.seconds / tune_default.seconds
    print(f"gradsweep ASHA wall / Tune ASHA wall:  {ratio:.3f}  {mark(ratio <= target)} "
          f"(target <= 1/{round(1 / target)}); against reuse_actors: "
          f"{ours.seconds / tune_reuse.seconds:.3f}")
    if not args.trivial:
        print()
        print_replay(by["gradsweep grid"], ASHA, args.shuffles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
