"""Memory checks of the engine's training step and evaluation.

- Steady memory: 10,000 training steps on fresh minibatches (``engine.data.Batcher``)
  allocate nothing new after the first few: the tracemalloc peak after step 100 equals the
  peak after the last step, and the resident size grows by less than 5 MB in between.
- Evaluation memory: a forward pass without gradients (the logits of 784-256-256-10 on
  10,000 rows) keeps no activation it no longer needs: its tracemalloc peak stays under the
  input plus two 10,000 x 256 float32 buffers plus the output. The input array exists
  before tracing starts, as a validation set does; the aligned copy the engine makes of
  every fed value is traced and is the "input" of the budget.

    python benchmarks/memory.py            # both checks, pass/fail with figures
    python benchmarks/memory.py --json

Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tracemalloc

import numpy as np

import engine as en

NETWORKS = {"2-16-1": (2, 16, 1), "64-128-128-10": (64, 128, 128, 10),
            "784-256-256-10": (784, 256, 256, 10)}
MB = 1e6


def rss_bytes(statm: int) -> int:
    """Resident set size of this process, read from an open ``/proc/self/statm``."""
    return int(os.pread(statm, 64, 0).split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(sizes, optimizer: str):
    x = en.placeholder((None, sizes[0]), name="x")
    y = en.placeholder((None,), dtype=np.int64, name="y")
    activation = "sigmoid" if sizes[-1] == 1 else "relu"
    logits = en.layers.mlp(x, sizes[1:], activation=activation, name="mlp")
    if sizes[-1] == 1:
        y = en.placeholder((None, 1), name="y")
        loss = en.losses.sigmoid_cross_entropy(logits, y)
    else:
        loss = en.losses.softmax_cross_entropy(logits, y)
    opt = en.optim.SGD(lr=0.01) if optimizer == "sgd" else en.optim.Adam(lr=0.001)
    return x, y, logits, loss, opt.minimize(loss)


def steady_memory(network: str, optimizer: str, steps: int, batch: int = 128) -> dict:
    """Train ``steps`` steps on minibatches of a 4096-row data set under tracemalloc.

    Batches are ``data[batcher.indices(step)]``: ``Batcher.batch`` builds its result with
    ``tuple(generator)``, which CPython resizes from a larger tuple, so such tuples slowly
    fill the interpreter's tuple free list (up to ~100 KB over the first ~2000 steps) and
    would be counted against the engine. Figures read during the loop go into an array
    made beforehand and are read after every step, so that the harness's own allocations
    repeat like the step's.
    """
    sizes = NETWORKS[network]
    rng = np.random.default_rng(0)
    data = rng.standard_normal((4096, sizes[0])).astype(np.float32)
    if sizes[-1] == 1:
        labels = (rng.random((4096, 1)) < 0.5).astype(np.float32)
    else:
        labels = rng.integers(0, sizes[-1], 4096)
    x, y, _, loss, train = build(sizes, optimizer)
    sess = en.Session(seed=0)
    batcher = en.data.Batcher(len(data), batch, seed=0)
    figures = np.zeros(4, np.int64)  # peak and RSS after step 100, then after the last step
    statm = os.open("/proc/self/statm", os.O_RDONLY)
    tracemalloc.start()
    try:
        # Step numbers start high so that every step number (and epoch number) is an int
        # object of the same size: small ints are preallocated by CPython, larger ones are
        # not, and the 28 bytes of a live step number would count as growth.
        first = 1 << 20
        for step in range(first, first + steps):
            idx = batcher.indices(step)
            sess.run([train, loss], {x: data[idx], y: labels[idx]})
            # Read the figures after every step, so that reading them is part of the
            # repeating pattern; keep those after step 100 and after the last.
            at = 0 if step - first + 1 == 100 else 2
            figures[at + 1] = rss_bytes(statm)
            figures[at] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        os.close(statm)
    peak_100, rss_100, peak_end, rss_end = (int(v) for v in figures)
    growth = rss_end - rss_100
    return {"check": "steady", "network": network, "optimizer": optimizer, "steps": steps,
            "peak_after_100": peak_100, "peak_after_last": peak_end,
            "rss_growth_bytes": growth,
            "passed": peak_end == peak_100 and growth < 5 * MB}


def evaluation_memory(rows: int = 10_000) -> dict:
    """The tracemalloc peak of ``logits`` of 784-256-256-10 on ``rows`` rows, twice."""
    sizes = NETWORKS["784-256-256-10"]
    x, _, logits, _, _ = build(sizes, "sgd")
    sess = en.Session(seed=0)
    sess.attach(logits)
    data = np.random.default_rng(1).standard_normal((rows, sizes[0])).astype(np.float32)
    output_bytes = rows * sizes[-1] * 4
    budget = data.nbytes + 2 * rows * 256 * 4 + output_bytes
    peaks = []
    tracemalloc.start()
    try:
        for _ in range(2):  # the first run fills the plan's pool, the second reuses it
            tracemalloc.reset_peak()
            out = sess.run(logits, {x: data})
            peaks.append(tracemalloc.get_traced_memory()[1])
            del out
    finally:
        tracemalloc.stop()
    return {"check": "evaluation", "network": "784-256-256-10", "rows": rows,
            "budget_bytes": budget, "peaks_bytes": peaks,
            "passed": max(peaks) < budget}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS),
                        choices=list(NETWORKS))
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"],
                        choices=["sgd", "adam"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    results = [steady_memory(n, o, args.steps) for n in args.networks for o in args.optimizers]
    results.append(evaluation_memory())
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            verdict = "PASS" if r["passed"] else "FAIL"
            if r["check"] == "steady":
                print(f"{verdict} steady memory, {r['network']} {r['optimizer']}, {r['steps']} "
                      f"steps: tracemalloc peak {r['peak_after_100'] / MB:.3f} MB after step "
                      f"100, {r['peak_after_last'] / MB:.3f} MB after the last; resident size "
                      f"grew {r['rss_growth_bytes'] / MB:+.2f} MB (limit 5 MB)")
            else:
                print(f"{verdict} evaluation memory, {r['network']} on {r['rows']} rows: "
                      f"tracemalloc peak {' then '.join(f'{p / MB:.2f}' for p in r['peaks_bytes'])}"
                      f" MB (first run, then again), budget {r['budget_bytes'] / MB:.2f} MB "
                      f"(input + two {r['rows']}x256 float32 + output)")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
