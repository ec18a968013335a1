"""Gradient descent on f(x) = x²: how the learning rate decides between slow convergence,
fast convergence and divergence.

The gradient is 2x, so one step is ``x <- x - lr * 2x = (1 - 2 lr) x`` and after ``step``
steps ``x = X0 (1 - 2 lr)^step``:

- lr < 0.5: x creeps to 0 without changing sign (slowly for a small lr);
- lr = 0.5: x lands on the minimum in one step;
- 0.5 < lr < 1: x overshoots, changing sign every step, and still converges;
- lr = 1: x bounces between X0 and -X0 forever;
- lr > 1: every step overshoots further: divergence.

    python experiments/quadratic.py            # the full grid (logs/quadratic)
    python experiments/quadratic.py --quick    # three short trials (logs/quadratic-quick)
    GRADSWEEP_QUICK=1 python -m service launch experiments/quadratic.py   # the same, quick

Reports ``x`` and ``loss`` (= x²) at every step, the values that step started from.
"""

import os
import sys

import numpy as np

import engine as en
from service import Sweep, grid

QUICK = "--quick" in sys.argv[1:] or os.environ.get("GRADSWEEP_QUICK") == "1"

X0 = 2.0
STEPS = 20 if QUICK else 50


def train(config, trial):
    x = en.Variable(np.array(X0), name="x")
    loss = en.mul(x, x, name="loss")
    train_op = en.optim.SGD(lr=config["lr"]).minimize(loss)

    sess = en.Session(seed=0)
    trial.log_graph(loss)
    for step, _ in trial.steps(sess, STEPS):   # reports every step
        # Fetched values are those the step started from: x at `step` is X0 (1 - 2 lr)^step.
        _, x_value, loss_value = sess.run([train_op, x, loss])
        trial.report(step, x=x_value, loss=loss_value)


if QUICK:
    space = {"lr": grid([0.1, 0.5, 1.1])}
else:
    space = {"lr": grid([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1])}

sweep = Sweep(name="quadratic-quick" if QUICK else "quadratic", train=train, space=space,
              metric="loss", mode="min", checkpoint_every=10 if QUICK else 25)

if __name__ == "__main__":
    sys.exit(sweep.run().exit_status)
