"""Why engine ÷ floor ≤ 1.15 is out of reach with Adam on 784-256-256-10.

The floor target leaves 0.15 × the matrix-multiply floor for everything else in a training
step. On the network's 269,322 float32 parameters this times, at 1 and 2 BLAS threads and in
alternating blocks:

- ``floor``: the step's matrix multiplies alone (as in ``engine_step.py``);
- ``engine_sgd``: the engine's whole SGD step (as in ``engine_step.py``);
- ``sgd_update`` and ``adam_update``: the engine's ``SGD.update`` and ``Adam.update`` on
  contiguous blocks, as the plan runs them once per step;
- ``sqrt_pass``: one ``np.sqrt`` over the second moments (Adam cannot do without it);
- ``inplace_pass``: one in-place ``np.multiply`` by a scalar, the cheapest pass there is.

Any numpy Adam update needs the square root and at least six other passes over the
parameters: two per moment (decay, then accumulate), a division and a subtraction; the
epsilon, the squared gradient and the step size are left out of the count in case some
formulation folds them, and every pass is counted at the in-place price, the cheapest. So
the best engine ÷ floor a numpy-only Adam step can reach is at least
(floor + the SGD step's other work + sqrt_pass + 6 × inplace_pass) / floor, where the other
work is engine_sgd - floor - sgd_update. The script prints that bound next to the target.

    python benchmarks/adam_update.py
"""

from __future__ import annotations

import sys

import numpy as np

import engine as en
from engine.plan import aligned_empty

import engine_step as bench  # the step builders and timing helpers (this script's folder)

NETWORK = "784-256-256-10"
TARGET = bench.TARGET_VS_FLOOR[NETWORK]
OTHER_PASSES = 6  # besides the square root, at the least: see the docstring


class Buffers:
    """What an optimizer's update asks of its context: reusable scratch arrays."""

    def __init__(self):
        self._arrays: dict = {}

    def buffer(self, key, shape, dtype):
        if key not in self._arrays:
            self._arrays[key] = aligned_empty(shape, dtype)
        return self._arrays[key]


def updates() -> dict:
    """The engine's SGD and Adam updates and the two unit passes, on blocks of the network's
    parameter count with realistic values."""
    sizes = bench.NETWORKS[NETWORK][0]
    n = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    rng = np.random.default_rng(0)

    def block(scale, positive=False):
        a = aligned_empty((n,), np.float32)
        a[...] = rng.standard_normal(n) * scale
        return np.abs(a, out=a) if positive else a

    param, grad = block(0.05), block(0.01)
    m, v, scratch = block(0.001), block(1e-4, positive=True), block(1.0)
    sgd = en.optim.SGD(**bench.OPTIMIZERS["sgd"])
    adam = en.optim.Adam(**bench.OPTIMIZERS["adam"], **bench.ADAM)
    ctx, steps = Buffers(), [1000]

    def adam_update():
        steps[0] += 1
        adam.update(ctx, 0, param, grad, (m, v), steps[0])

    return {
        "sgd_update": lambda: sgd.update(ctx, 0, param, grad, (), 1),
        "adam_update": adam_update,
        "sqrt_pass": lambda: np.sqrt(v, out=scratch),
        "inplace_pass": lambda: np.multiply(scratch, 0.5, out=scratch),
    }, n


def main() -> int:
    configs, n = [], 0
    for threads in (1, 2):
        bench.set_threads(threads)
        x, y = bench.make_data(NETWORK)
        engine_step, weights = bench.build_engine(NETWORK, "sgd", x, y)
        steps, n = updates()
        configs.append((threads, {"floor": bench.build_floor(NETWORK, x, weights),
                                  "engine_sgd": engine_step, **steps}))
    medians = bench.measure(configs, repeats=11, block_seconds=0.04, pause=0.3)
    print(f"BLAS: {bench.blas_description()}; numpy {np.__version__}")
    print(f"{NETWORK}: {n:,} float32 parameters; median µs of 11 alternating blocks\n")
    print("| threads | floor | engine SGD step | SGD update | Adam update | √ pass "
          "| in-place pass | allowed above floor | numpy Adam ÷ floor, at best |")
    print("|" + "---:|" * 9)
    for (threads, _), times in zip(configs, medians):
        us = {k: v * 1e6 for k, v in times.items()}
        other = us["engine_sgd"] - us["floor"] - us["sgd_update"]
        bound = (us["floor"] + other + us["sqrt_pass"] + OTHER_PASSES * us["inplace_pass"]) \
            / us["floor"]
        print(f"| {threads} | {us['floor']:,.1f} | {us['engine_sgd']:,.1f} | "
              f"{us['sgd_update']:.1f} | {us['adam_update']:.1f} | {us['sqrt_pass']:.1f} | "
              f"{us['inplace_pass']:.1f} | {(TARGET - 1) * us['floor']:.1f} | "
              f"{bound:.2f} (target {TARGET}) |")
    print(f"\nnumpy Adam ÷ floor, at best = (floor + (engine SGD step - floor - SGD update) "
          f"+ √ pass + {OTHER_PASSES} × in-place pass) / floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
