"""A sweep of 2,000 tiny trials through gradsweep: what the driver costs at scale.

Each trial trains a 2-4-1 network for 5 steps, reports every step and checkpoints once at the
end (events, results.jsonl, a checkpoint and result.json per trial, as any trial). The sweep
runs in this process as ``launch`` runs it: an embedded local Ray started by ``run_sweep``,
one trial per CPU. Then the finished sweep is resumed. Prints, against the targets:

- driver peak RSS (< 500 MB): this process's high-water mark (``ru_maxrss``); Ray's own
  processes (GCS, raylet, workers) are not the driver and are not counted;
- wall time of the sweep, from ``run_sweep`` to its return (Ray's start included);
- time writing state.json (<= 5% of wall): every ``SweepState.save`` timed;
- resume of the finished sweep (< 5 s, no trial rerun): ``run_sweep(..., resume=True)``'s
  wall time, and the trials' attempts and completion records left as they were.

    python benchmarks/many_trials.py [--trials 2000] [--dir FOLDER]
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import engine as en
from service import Sweep, grid, loguniform
from service.driver import run_sweep
from service.storage import SweepState

STEPS = 5
TARGETS = {"peak_rss_mb": 500.0, "state_share": 0.05, "resume_s": 5.0}


def tiny_train(config: dict, trial) -> None:
    """5 steps of a 2-4-1 network on 16 points, a report each, a checkpoint at the end."""
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    hidden = en.layers.dense(x, 4, activation="tanh", name="hidden")
    logits = en.layers.dense(hidden, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    train_op = en.optim.SGD(lr=config["lr"]).minimize(loss)
    rng = np.random.default_rng(config["seed"])
    inputs = rng.uniform(-1, 1, (16, 2)).astype(np.float32)
    labels = (inputs[:, :1] > inputs[:, 1:]).astype(np.float32)
    sess = en.Session(seed=config["seed"])
    start = trial.restore(sess)
    for step in range(start, STEPS):
        _, value = sess.run([train_op, loss], feed={x: inputs, y: labels})
        trial.report(step, loss=value)
    trial.checkpoint(sess, STEPS - 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


class StateSaves:
    """Times every write of state.json (the driver's only writes of it go through save)."""

    def __init__(self):
        self.seconds, self.count, self.largest = 0.0, 0, 0
        self._save = SweepState.save

    def __enter__(self) -> StateSaves:
        saves = self

        def timed(state, path):
            began = time.perf_counter()
            saves._save(state, path)
            saves.seconds += time.perf_counter() - began
            saves.count += 1
            saves.largest = max(saves.largest, Path(path).stat().st_size)

        SweepState.save = timed
        return self

    def __exit__(self, *exc) -> None:
        SweepState.save = self._save


def completion_records(root: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob("*/result.json")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000, help="an even number")
    parser.add_argument("--dir", help="where the sweep goes (default: a temporary folder)")
    args = parser.parse_args(argv)
    storage = Path(args.dir or tempfile.mkdtemp(prefix="many-trials-"))
    sweep = Sweep(name="many", train=tiny_train, metric="loss", mode="min",
                  space={"lr": loguniform(1e-3, 1.0), "seed": grid([0, 1])},
                  num_samples=args.trials // 2, checkpoint_every=STEPS, keep_checkpoints=1)
    before_mb = peak_rss_mb()

    with StateSaves() as saves:
        began = time.perf_counter()
        result = run_sweep(sweep, storage=str(storage), out=io.StringIO(),
                           progress=False)
        status = result.exit_status
        wall = time.perf_counter() - began
    if status != 0 or len(result.trials) != args.trials:
        print(f"the sweep failed: status {status}, {len(result.trials)} trials", file=sys.stderr)
        return 1
    rss_mb = peak_rss_mb()
    attempts = {t.id: len(t.attempts) for t in result.trials}
    records = completion_records(result.root)

    began = time.perf_counter()
    resumed = run_sweep(sweep, storage=str(storage), resume=True, out=io.StringIO(),
                        progress=False)
    status = resumed.exit_status
    resume_s = time.perf_counter() - began
    state = SweepState.load(result.root / "state.json")
    rerun = [t.id for t in state.trials if len(t.attempts) != attempts[t.id]]
    rerun += [k for k, v in completion_records(result.root).items() if records.get(k) != v]

    share = saves.seconds / wall
    rows = [
        ("trials", f"{len(result.trials)}", "", ""),
        ("wall time of the sweep", f"{wall:.1f} s", "", ""),
        ("  per trial", f"{wall / len(result.trials) * 1000:.1f} ms", "", ""),
        ("driver peak RSS", f"{rss_mb:.0f} MB", f"< {TARGETS['peak_rss_mb']:.0f} MB",
         rss_mb < TARGETS["peak_rss_mb"]),
        ("  of which before the sweep", f"{before_mb:.0f} MB", "", ""),
        ("state.json writes", f"{saves.count} x up to {saves.largest / 1e6:.2f} MB", "", ""),
        ("time writing state.json", f"{saves.seconds:.2f} s = {share:.1%} of wall",
         f"<= {TARGETS['state_share']:.0%}", share <= TARGETS["state_share"]),
        ("resume of the finished sweep", f"{resume_s:.2f} s", f"< {TARGETS['resume_s']:.0f} s",
         resume_s < TARGETS["resume_s"] and status == 0),
        ("trials rerun by the resume", f"{len(rerun)}", "0", not rerun),
    ]
    for name, value, target, ok in rows:
        verdict = "" if ok == "" else ("ok" if ok else "MISSED")
        print(f"{name:<30} {value:>28}  {target:>9}  {verdict}")
    print(f"(sweep folder: {result.root})")
    return 0 if all(ok in ("", True) for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
