"""The triangle problem: is a point of the square [-1, 1]² inside a triangle?

The lectures' first network: each hidden neuron draws one line (a half-plane), and the
output neuron ANDs the three half-planes into a triangle — so three hidden units suffice,
one or two do not, and without a non-linearity (``activation="none"``) the network, however
wide, is one linear map: a linear classifier that cannot carve a triangle out of the square.
The grid shows all of it: hidden size × activation × learning rate × seed (48 trials).

    python experiments/triangle.py                      # into logs/triangle (make sweep)
    python experiments/triangle.py --quick              # two tiny trials (logs/triangle-quick)
    python -m service launch experiments/triangle.py    # the same, from the command line
    python -m service tensorboard logs                  # then open http://127.0.0.1:6006

Reports ``loss`` and ``accuracy`` on the training points every 10 steps, ``loss/val`` and
``accuracy/val`` on held-out points every 100 steps, and ``accuracy/test`` on 1000 further
points at the last step; trials are ranked by ``loss/val``.
"""

import os
import sys

import numpy as np

import engine as en
from service import Sweep, grid

QUICK = "--quick" in sys.argv[1:] or os.environ.get("GRADSWEEP_QUICK") == "1"

STEPS = 1500 if QUICK else 3000
REPORT_EVERY = 10
EVAL_EVERY = 100
TRIANGLE = np.array([[-0.8, -0.7], [0.8, -0.7], [0.0, 0.8]])


def triangle_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform in [-1, 1]² ``(n, 2)`` and labels ``(n, 1)``: 1 inside, 0 outside
    (the lectures' +1 / -1, shifted to the 0 / 1 that the log-loss wants)."""
    points = np.random.default_rng(seed).uniform(-1, 1, (n, 2))
    # a point is inside when it lies on the same side of all three edges
    sides = np.stack([(b[0] - a[0]) * (points[:, 1] - a[1]) - (b[1] - a[1]) * (points[:, 0] - a[0])
                      for a, b in zip(TRIANGLE, np.roll(TRIANGLE, -1, axis=0))], axis=1)
    inside = (sides > 0).all(axis=1) | (sides < 0).all(axis=1)
    return points.astype(np.float32), inside[:, None].astype(np.float32)


def train(config, trial):
    train_x, train_y = triangle_data(1000, seed=0)
    val_x, val_y = triangle_data(500, seed=1)
    test_x, test_y = triangle_data(1000, seed=2)

    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    activation = None if config["activation"] == "none" else config["activation"]
    hidden = en.layers.dense(x, config["hidden"], activation=activation, name="hidden")
    logits = en.layers.dense(hidden, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y, name="loss")
    accuracy = en.metrics.accuracy(logits, y, name="accuracy")
    train_op = en.optim.Adam(lr=config["lr"]).minimize(loss)

    sess = en.Session(seed=config["seed"])
    trial.log_graph(loss)                 # once per run: the Graphs tab
    # restores first; report_now every REPORT_EVERY steps and at the last; checkpoints as due
    for step, report_now in trial.steps(sess, STEPS, eval_every=REPORT_EVERY):
        _, l, a = sess.run([train_op, loss, accuracy], feed={x: train_x, y: train_y})
        last = step == STEPS - 1
        if report_now:
            metrics = {"loss": l, "accuracy": a}
            if (step + 1) % EVAL_EVERY == 0 or last:
                val_loss, val_accuracy = sess.run([loss, accuracy], feed={x: val_x, y: val_y})
                metrics.update({"loss/val": val_loss, "accuracy/val": val_accuracy})
            if last:
                metrics["accuracy/test"] = sess.run(accuracy, feed={x: test_x, y: test_y})
            trial.report(step, metrics)


if QUICK:
    space = {"hidden": grid([3]), "activation": grid(["sigmoid", "none"]), "lr": grid([0.1]),
             "seed": grid([0])}
else:
    space = {"hidden": grid([1, 2, 3, 8]), "activation": grid(["sigmoid", "relu", "none"]),
             "lr": grid([0.03, 0.1]), "seed": grid([0, 1])}

sweep = Sweep(name="triangle-quick" if QUICK else "triangle", train=train, space=space,
              metric="loss/val", mode="min", checkpoint_every=500)

if __name__ == "__main__":
    sys.exit(sweep.run().exit_status)
