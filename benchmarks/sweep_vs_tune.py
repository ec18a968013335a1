"""Sweep throughput side by side with Ray Tune, on one local Ray, plus report latency.

One embedded Ray (127.0.0.1, no dashboard, 2 CPUs) is started once, before any clock starts;
both systems run 2 trials at a time on 1 CPU each. Each workload runs through gradsweep
(TensorBoard event files and checkpoints on), Ray Tune with its defaults and Ray Tune with
``reuse_actors=True`` (``Tuner`` + ``tune.grid_search``, its default loggers, TensorBoard's
included), alternating, repeated; medians are printed:

1. trivial: 100 trials, 10 reports each, one checkpoint at the end (one kept);
2. sleep: the same trials sleeping 0.05 s before each report: makespan / ideal, where ideal
   is the total sleep / 2 slots (25 s);
3. triangle: 100 real tiny trials, the triangle MLP trained 200 steps (a report every 10
   steps, a checkpoint at the end); ideal is its measured work (the same 100 trials run
   one after another in one process, reporting nowhere) / 2 slots.

The same ``train(config, trial)`` functions run in both systems: in Tune, inside a function
trainable whose ``trial`` turns reports into ``tune.report`` calls and checkpoints into
``tune.Checkpoint`` folders written by the engine's Saver.

Columns: wall time (without ray.init), per-trial overhead ``(wall - work / 2) * 2 /
trials``, makespan / ideal, files per trial (Tune: in its storage folder, plus the copy it
stages in Ray's session folder), and gradsweep's wall time / this row's.

Latency: 2 trials report in a paced loop, ``--rate`` reports/s in all (5,000 by default),
each report carrying its wall-clock send time; the driver stamps each report's arrival.
p50 / p99 / max of arrival - send (target: p99 < 100 ms).

    python benchmarks/sweep_vs_tune.py [--quick] [--repeats 3] [--only trivial,sleep,...]

``--quick``: one repeat (ratios from a single run, about 12 minutes; the full run takes
about 35, most of it Ray Tune's default runs). ``--systems gradsweep`` leaves Tune out.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import engine as en
from service import driver
from service.messages import Report
from service.sweep import load_sweep_file

from sweep import (REPORTS, SLOTS, Measure, count_files, grid_space, local_ray, median,
                   per_trial_overhead, run_gradsweep, scratch, trivial_train)

TRIALS = 100
SLEEP = 0.05
TRIANGLE_STEPS = 200
REPORT_EVERY = 10
TARGETS = "trivial <= 1/25 of Tune default and < Tune reuse_actors; sleep <= 1.15x ideal; " \
    "files <= 10 per trial; p99 latency < 100 ms at 5,000 reports/s"


# ----------------------------------------------------------------- the triangle trial

def experiment_module(name: str):
    """The module of ``experiments/<name>.py``, loaded as a sweep file (shipped by value)."""
    sweep = load_sweep_file(Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py")
    return sys.modules[sweep.train.__module__]


triangle_data = experiment_module("triangle").triangle_data    # (n, seed) -> points, labels


def triangle_train(config: dict, trial) -> None:
    """The triangle MLP (2 -> hidden -> 1, Adam), 200 full-batch steps on 500 points."""
    points, labels = triangle_data(500, seed=0)
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    hidden = en.layers.dense(x, config["hidden"], activation="sigmoid", name="hidden")
    logits = en.layers.dense(hidden, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y, name="loss")
    accuracy = en.metrics.accuracy(logits, y, name="accuracy")
    train_op = en.optim.Adam(lr=config["lr"]).minimize(loss)
    sess = en.Session(seed=config["seed"])
    trial.log_graph(loss)
    start = trial.restore(sess)
    for step in range(start, TRIANGLE_STEPS):
        _, loss_value, accuracy_value = sess.run([train_op, loss, accuracy],
                                                 feed={x: points, y: labels})
        if (step + 1) % REPORT_EVERY == 0:
            trial.report(step, loss=loss_value, accuracy=accuracy_value)
    trial.checkpoint(sess, TRIANGLE_STEPS - 1)


TRIANGLE_SPACE = {"lr": [0.01, 0.03, 0.1, 0.3, 1.0], "hidden": [2, 3, 4, 8, 16],
                  "seed": [0, 1, 2, 3]}     # 100 trials


class NullTrial:
    """A trial that records nothing: runs a train function for its own work alone."""

    def report(self, step, metrics=None, /, **named) -> None:
        pass

    def checkpoint(self, sess, step, **options) -> None:
        pass

    def restore(self, sess) -> int:
        return 0

    def log_graph(self, node) -> None:
        pass


def configs(space: dict[str, list]) -> list[dict]:
    """Every combination of a grid (the order does not matter here)."""
    combos = [{}]
    for key, values in space.items():
        combos = [{**c, key: v} for c in combos for v in values]
    return combos


def work_seconds(train: Callable, space: dict[str, list]) -> float:
    """The trials' own work: each run in this process with a trial that records nothing."""
    start = time.perf_counter()
    for config in configs(space):
        train(config, NullTrial())
    return time.perf_counter() - start


# ----------------------------------------------------------------- Ray Tune

class TuneTrial:
    """The ``trial`` a train function gets inside Tune: a report reaches ``tune.report``
    one call late, so that the checkpoint taken after the last report rides with it
    (Tune attaches checkpoints to reports); the number of reports stays the same."""

    def __init__(self):
        self._pending: dict | None = None

    def report(self, step, metrics=None, /, **named) -> None:
        from ray import tune

        if self._pending is not None:
            tune.report(self._pending)
        self._pending = {"step": int(step), **{k: float(v) for k, v in
                                               {**(metrics or {}), **named}.items()}}

    def checkpoint(self, sess, step, **options) -> None:   # histograms: none in Tune's
        from ray import tune

        folder = tempfile.mkdtemp(prefix="tune-ckpt-")
        try:
            en.Saver(max_to_keep=1).save(sess, os.path.join(folder, "ckpt"),
                                         global_step=int(step) + 1)
            tune.report(self._pending or {"step": int(step)},
                        checkpoint=tune.Checkpoint.from_directory(folder))
            self._pending = None
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def restore(self, sess) -> int:
        return 0

    def log_graph(self, node) -> None:
        pass

    def close(self) -> None:
        from ray import tune

        if self._pending is not None:
            tune.report(self._pending)
            self._pending = None


def tune_trainable(train: Callable) -> Callable[[dict], None]:
    """A Tune function trainable running ``train(config, trial)``."""
    def trainable(config: dict) -> None:
        trial = TuneTrial()
        train(config, trial)
        trial.close()

    trainable.__name__ = train.__name__
    return trainable


def tune_staging(name: str) -> str | None:
    """The folder where Tune stages an experiment's trial files inside Ray's session."""
    import ray

    session = ray._private.worker.global_worker.node.get_session_dir_path()
    found = glob.glob(os.path.join(session, "artifacts", "*", name, "driver_artifacts"))
    return found[0] if found else None


def fit_quietly(tuner, name: str):
    """``tuner.fit()`` without its experiment tables on stdout; raises if a trial failed."""
    with contextlib.redirect_stdout(io.StringIO()):
        results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"Tune experiment {name!r}: {len(results.errors)} trials failed: "
                           f"{results.errors[0]}")
    return results


def run_tune(train: Callable, space: dict[str, list], storage: str, name: str, *,
             reuse_actors: bool) -> Measure:
    """Time one Ray Tune experiment of ``train`` over the grid ``space``, SLOTS trials at a
    time on 1 CPU each, one checkpoint kept; Tune's defaults otherwise."""
    from ray import tune

    start = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(tune_trainable(train), {"cpu": 1}),
        param_space={key: tune.grid_search(values) for key, values in space.items()},
        tune_config=tune.TuneConfig(max_concurrent_trials=SLOTS, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    results = fit_quietly(tuner, name)
    seconds = time.perf_counter() - start
    trials = len(results)
    staging = tune_staging(name)
    return Measure(seconds, trials, count_files(Path(storage) / name) / trials,
                   count_files(staging) / trials if staging else 0.0)


# ----------------------------------------------------------------- the comparison

SYSTEMS = ("gradsweep", "Tune default", "Tune reuse_actors")


def run_system(system: str, train: Callable, space: dict[str, list], storage: str,
               name: str) -> Measure:
    if system == "gradsweep":
        return run_gradsweep(train, space, storage, name, keep_checkpoints=1)
    return run_tune(train, space, storage, name, reuse_actors=system != "Tune default")


def compare(workload: str, train: Callable, space: dict[str, list], work_s: float,
            repeats: int, storage: str, systems: tuple[str, ...] = SYSTEMS) -> list[dict]:
    """Run the workload through each system, alternating (the order rotates each repeat);
    returns one row per system with medians."""
    runs: dict[str, list[Measure]] = {system: [] for system in systems}
    for repeat in range(repeats):
        shift = repeat % len(systems)
        order = systems[shift:] + systems[:shift]
        for system in order:
            name = f"{workload}-{system.split()[-1]}-{repeat}".replace("_", "-")
            measure = run_system(system, train, space, storage, name)
            runs[system].append(measure)
            print(f"  {workload:9s} {system:18s} repeat {repeat + 1}: {measure.seconds:8.2f} s",
                  file=sys.stderr, flush=True)
    rows = []
    for system, measures in runs.items():
        wall = median([m.seconds for m in measures])
        trials = measures[0].trials
        rows.append({"workload": workload, "system": system, "wall": wall,
                     "each": [m.seconds for m in measures],
                     "overhead": per_trial_overhead(wall, trials, work_s),
                     "ratio_ideal": wall / (work_s / SLOTS) if work_s else None,
                     "files": median([m.files_per_trial for m in measures]),
                     "staged": median([m.staged_per_trial for m in measures])})
    ours = rows[0]["wall"]
    for row in rows:
        row["ours_vs"] = ours / row["wall"]
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'workload':9s} {'system':18s} {'wall s':>8s} {'overhead/trial':>15s} "
          f"{'makespan/ideal':>14s} {'files/trial':>15s} {'gradsweep/this':>14s}")
    for row in rows:
        ideal = f"{row['ratio_ideal']:.3f}" if row["ratio_ideal"] else "-"
        files = f"{row['files']:.2f}" + (f" +{row['staged']:.1f}" if row["staged"] else "")
        print(f"{row['workload']:9s} {row['system']:18s} {row['wall']:8.2f} "
              f"{row['overhead'] * 1e3:12.1f} ms {ideal:>14s} {files:>15s} "
              f"{row['ours_vs']:14.3f}")


# ----------------------------------------------------------------- report latency

def latency_train(config: dict, trial) -> None:
    """Report ``config["rate"]`` times a second for ``config["seconds"]``, each report
    carrying its wall-clock send time (``sent``)."""
    rate, count = config["rate"], int(config["rate"] * config["seconds"])
    begin = time.time()
    for step in range(count):
        delay = begin + step / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        trial.report(step, sent=time.time())


def measure_latency(rate: float, seconds: float, storage: str) -> dict:
    """Report-to-driver latency of SLOTS trials reporting ``rate`` reports/s in all: the
    driver stamps each report's arrival (when it folds the report into its trial table)."""
    delays, sends = [], []
    original = driver.Controller.fold

    def fold(self, run, items):
        now = time.time()
        for item in items:
            if isinstance(item, Report):
                delays.append(now - item.metrics["sent"])
                sends.append(item.metrics["sent"])
        return original(self, run, items)

    driver.Controller.fold = fold
    try:
        run_gradsweep(latency_train, grid_space(SLOTS, rate=rate / SLOTS, seconds=seconds),
                      storage, "latency")
    finally:
        driver.Controller.fold = original
    delays.sort()
    quantile = {q: delays[min(len(delays) - 1, int(q * len(delays)))] for q in (0.5, 0.99)}
    return {"reports": len(delays), "rate": len(sends) / (max(sends) - min(sends)),
            "p50": quantile[0.5], "p99": quantile[0.99], "max": delays[-1]}


# ----------------------------------------------------------------- main

WORKLOADS = ("trivial", "sleep", "triangle", "latency")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat instead of three")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help=f"comma-separated workloads among {', '.join(WORKLOADS)}")
    parser.add_argument("--rate", type=float, default=5000.0, help="latency: reports/s in all")
    parser.add_argument("--seconds", type=float, default=4.0, help="latency: how long")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, among {', '.join(SYSTEMS)} (gradsweep first)")
    parser.add_argument("--dir", default=None, help="storage folder (default: a temporary one)")
    args = parser.parse_args(argv)
    systems = tuple(args.systems.split(","))
    if not set(systems) <= set(SYSTEMS) or systems[0] != "gradsweep":
        parser.error(f"--systems: gradsweep first, then any of {', '.join(SYSTEMS[1:])}")
    repeats = args.repeats or (1 if args.quick else 3)
    only = args.only.split(",")
    unknown = sorted(set(only) - set(WORKLOADS))
    if unknown:
        parser.error(f"--only: unknown workload(s) {', '.join(unknown)}")
    trivial, sleeping = grid_space(args.trials), grid_space(args.trials, sleep=SLEEP)
    rows = []
    with scratch(args.dir) as storage, local_ray() as init_s:
        print(f"local Ray up in {init_s:.2f} s (not counted); {SLOTS} trials at a time, "
              f"1 CPU each; {repeats} repeat(s), alternating", file=sys.stderr, flush=True)
        if "trivial" in only:
            rows += compare("trivial", trivial_train, trivial, 0.0, repeats, storage, systems)
        if "sleep" in only:
            rows += compare("sleep", trivial_train, sleeping, args.trials * REPORTS * SLEEP,
                            repeats, storage, systems)
        if "triangle" in only:
            space = TRIANGLE_SPACE if args.trials == TRIALS else \
                {"lr": [0.1], "hidden": [8], "seed": list(range(args.trials))}
            work = work_seconds(triangle_train, space)
            print(f"  triangle work alone: {work:.2f} s", file=sys.stderr, flush=True)
            rows += compare("triangle", triangle_train, space, work, repeats, storage, systems)
        latency = measure_latency(args.rate, args.seconds, storage) if "latency" in only \
            else None
    print(f"\n{args.trials} trials per workload, median of {repeats}; ray.init not counted")
    if rows:
        print_table(rows)
    if latency:
        print(f"\nreport-to-driver latency: {latency['reports']} reports at "
              f"{latency['rate']:.0f} reports/s in all: p50 {latency['p50'] * 1e3:.1f} ms, "
              f"p99 {latency['p99'] * 1e3:.1f} ms, max {latency['max'] * 1e3:.1f} ms")
    print(f"\ntargets: {TARGETS}")


if __name__ == "__main__":
    main()
