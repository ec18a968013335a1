"""Two interleaved spirals (the TensorFlow playground's hardest data set): depth x width x
activation.

Each class is an arm of a spiral winding twice around the origin, the other arm turned by
half a turn. No straight line separates them: a network without a non-linearity
(``activation="linear"``, i.e. a linear classifier however deep) stays near chance, while a
small ReLU or tanh network wraps its decision boundary around the arms.

    python experiments/spirals.py            # the full grid (logs/spirals)
    python experiments/spirals.py --quick    # two tiny trials (logs/spirals-quick)
    GRADSWEEP_QUICK=1 python -m service launch experiments/spirals.py   # the same, quick

Reports ``loss/train`` and ``loss/val``, ``accuracy/val`` during training and
``accuracy/test`` (held-out points) at the last step; the sweep ranks trials by
``accuracy/val``.
"""

import os
import sys

import numpy as np

import engine as en
from service import Sweep, grid

QUICK = "--quick" in sys.argv[1:] or os.environ.get("GRADSWEEP_QUICK") == "1"

STEPS = 1500 if QUICK else 4000
BATCH = 64
EVAL_EVERY = 100
TURNS = 2.0
RADIUS = 2.0   # points in about [-2, 2]², roughly unit variance
NOISE = 0.02


def spirals(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points ``(n, 2)`` and their labels ``(n, 1)`` in {0, 1}."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    # sqrt spreads the points evenly along the arm instead of crowding the centre
    t = np.sqrt(rng.uniform(0.02, 1.0, n))
    angle = 2 * np.pi * TURNS * t + np.pi * labels
    points = RADIUS * t[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    points += NOISE * rng.standard_normal((n, 2))
    return points.astype(np.float32), labels[:, None].astype(np.float32)


def load_splits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One fixed data set for every trial, ``{"train" | "val" | "test": (points, labels)}``:
    1200 points to train on, 400 to validate, 400 to test."""
    points, labels = spirals(2000, seed)
    cuts = {"train": slice(0, 1200), "val": slice(1200, 1600), "test": slice(1600, 2000)}
    return {name: (points[cut], labels[cut]) for name, cut in cuts.items()}


def train(config, trial):
    data = load_splits()
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    sizes = [config["width"]] * config["depth"] + [1]
    logits = en.layers.mlp(x, sizes, activation=config["activation"], name="mlp")
    loss = en.losses.sigmoid_cross_entropy(logits, y, name="loss")
    accuracy = en.metrics.accuracy(logits, y, name="accuracy")
    train_op = en.optim.Adam(lr=config["lr"]).minimize(loss)

    sess = en.Session(seed=config["seed"])
    trial.log_graph(loss)
    batches = en.data.Batcher(len(data["train"][0]), BATCH, seed=config["seed"])
    for step, evaluate in trial.steps(sess, STEPS, eval_every=EVAL_EVERY):
        batch_x, batch_y = batches.batch(step, *data["train"])
        _, train_loss = sess.run([train_op, loss], feed={x: batch_x, y: batch_y})
        if evaluate:
            val_loss, val_accuracy = sess.run([loss, accuracy], feed=dict(zip((x, y),
                                                                               data["val"])))
            metrics = {"loss/train": train_loss, "loss/val": val_loss,
                       "accuracy/val": val_accuracy}
            if step == STEPS - 1:
                metrics["accuracy/test"] = sess.run(accuracy, feed=dict(zip((x, y),
                                                                            data["test"])))
            trial.report(step, metrics)


if QUICK:
    space = {"depth": grid([2]), "width": grid([32]), "activation": grid(["relu", "linear"]),
             "lr": grid([0.01]), "seed": grid([0])}
else:
    space = {"depth": grid([1, 2, 3]), "width": grid([8, 32]),
             "activation": grid(["relu", "tanh", "linear"]), "lr": grid([0.01]),
             "seed": grid([0, 1])}

sweep = Sweep(name="spirals-quick" if QUICK else "spirals", train=train, space=space,
              metric="accuracy/val", mode="max", checkpoint_every=500)

if __name__ == "__main__":
    sys.exit(sweep.run().exit_status)
