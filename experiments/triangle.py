"""The triangle problem: is a point of the square [-1, 1]² inside a triangle? lr x hidden x seed.

Three sigmoid hidden units suffice in principle (one half-plane per side, the output unit
ANDs them); the grid shows how width and learning rate change how fast a network gets there.
12 trials of 500 full-batch Adam steps: about a minute on two cores, most of it Ray starting.

    python experiments/triangle.py                     # into logs/triangle
    python -m service launch experiments/triangle.py   # the same, from the command line
    python -m service tensorboard logs                 # then open http://127.0.0.1:6006

Reports ``loss`` and ``accuracy`` on the training points every step and ``loss/val`` and
``accuracy/val`` on held-out points every 25 steps and at the end; trials are ranked by
``loss/val``.
"""

import sys

import numpy as np

import engine as en
from service import Sweep, grid

STEPS = 500
EVAL_EVERY = 25
TRIANGLE = np.array([[-0.8, -0.7], [0.8, -0.7], [0.0, 0.8]])


def triangle_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform in [-1, 1]² ``(n, 2)`` and labels ``(n, 1)``: 1 inside, 0 outside."""
    points = np.random.default_rng(seed).uniform(-1, 1, (n, 2))
    # a point is inside when it lies on the same side of all three edges
    sides = np.stack([(b[0] - a[0]) * (points[:, 1] - a[1]) - (b[1] - a[1]) * (points[:, 0] - a[0])
                      for a, b in zip(TRIANGLE, np.roll(TRIANGLE, -1, axis=0))], axis=1)
    inside = (sides > 0).all(axis=1) | (sides < 0).all(axis=1)
    return points.astype(np.float32), inside[:, None].astype(np.float32)


def train(config, trial):
    train_x, train_y = triangle_data(1000, seed=0)
    val_x, val_y = triangle_data(500, seed=1)

    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    hidden = en.layers.dense(x, config["hidden"], activation="sigmoid", name="hidden")
    logits = en.layers.dense(hidden, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y, name="loss")
    accuracy = en.metrics.accuracy(logits, y, name="accuracy")
    train_op = en.optim.Adam(lr=config["lr"]).minimize(loss)

    sess = en.Session(seed=config["seed"])
    trial.log_graph(loss)                 # once per run: the Graphs tab
    start = trial.restore(sess)           # step to continue from; 0 for a fresh trial
    for step in range(start, STEPS):
        _, l, a = sess.run([train_op, loss, accuracy], feed={x: train_x, y: train_y})
        metrics = {"loss": l, "accuracy": a}
        if (step + 1) % EVAL_EVERY == 0 or step == STEPS - 1:
            val_loss, val_accuracy = sess.run([loss, accuracy], feed={x: val_x, y: val_y})
            metrics.update({"loss/val": val_loss, "accuracy/val": val_accuracy})
        trial.report(step, metrics)
        if trial.should_checkpoint(step):
            trial.checkpoint(sess, step)


sweep = Sweep(name="triangle", train=train,
              space={"lr": grid([0.01, 0.1]), "hidden": grid([3, 8, 16]), "seed": grid([0, 1])},
              metric="loss/val", mode="min")

if __name__ == "__main__":
    sys.exit(sweep.run().exit_status)
