"""Linear regression by minibatch gradient descent: which optimizer and learning rate find the
true weights?

Data: N = 1000 points with D = 3 standard-normal features and ``y = x · TRUE_WEIGHTS +
0.2 · noise`` (no intercept), 800 to train on and 200 to validate. The model is one dense
unit without bias, trained on the mean squared error in batches of 32. The good settings end
within a few hundredths of the true weights (least squares on 800 points is off by about
0.2 / sqrt(800) ≈ 0.007); a small learning rate has not got there yet.

    python experiments/linear_regression.py            # the full grid (logs/linear_regression)
    python experiments/linear_regression.py --quick    # four short trials
    GRADSWEEP_QUICK=1 python -m service launch experiments/linear_regression.py   # quick

Reports ``loss/train`` (the last batch), ``loss/val`` and ``weights/error`` (the largest
distance of a learned weight from the truth) every epoch; the sweep ranks by ``loss/val``.
"""

import os
import sys

import numpy as np

import engine as en
from service import Sweep, grid

QUICK = "--quick" in sys.argv[1:] or os.environ.get("GRADSWEEP_QUICK") == "1"

N, D = 1000, 3
TRUE_WEIGHTS = np.array([2.0, -3.4, 1.7])
NOISE = 0.2
N_TRAIN = 800
BATCH = 32
STEPS = 250 if QUICK else 1000
EVAL_EVERY = N_TRAIN // BATCH   # once an epoch


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(N, D)`` and targets ``(N, 1)``, float32, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((N, D))
    targets = features @ TRUE_WEIGHTS + NOISE * rng.standard_normal(N)
    return features.astype(np.float32), targets[:, None].astype(np.float32)


def make_optimizer(name: str, lr: float) -> en.optim.Optimizer:
    if name == "sgd":
        return en.optim.SGD(lr=lr)
    if name == "momentum":
        return en.optim.SGD(lr=lr, momentum=0.9)
    if name == "adam":
        return en.optim.Adam(lr=lr)
    if name == "rmsprop":
        return en.optim.RMSProp(lr=lr)
    raise ValueError(f"unknown optimizer {name!r}: use sgd, momentum, adam or rmsprop")


def train(config, trial):
    features, targets = make_data()
    train_x, train_y = features[:N_TRAIN], targets[:N_TRAIN]
    val_x, val_y = features[N_TRAIN:], targets[N_TRAIN:]

    x = en.placeholder((None, D), name="x")
    y = en.placeholder((None, 1), name="y")
    prediction = en.layers.dense(x, 1, use_bias=False, name="linear")
    loss = en.losses.mse(prediction, y, name="loss")
    train_op = make_optimizer(config["optimizer"], config["lr"]).minimize(loss)

    sess = en.Session(seed=config["seed"])
    trial.log_graph(loss)
    batches = en.data.Batcher(N_TRAIN, BATCH, seed=config["seed"])
    for step, evaluate in trial.steps(sess, STEPS, eval_every=EVAL_EVERY):
        batch_x, batch_y = batches.batch(step, train_x, train_y)
        _, train_loss = sess.run([train_op, loss], feed={x: batch_x, y: batch_y})
        if evaluate:
            val_loss = sess.run(loss, feed={x: val_x, y: val_y})
            weights = sess.variables()["linear/kernel"][:, 0]
            trial.report(step, {"loss/train": train_loss, "loss/val": val_loss,
                                "weights/error": np.abs(weights - TRUE_WEIGHTS).max()})


if QUICK:
    space = {"optimizer": grid(["sgd", "adam"]), "lr": grid([0.001, 0.05]), "seed": grid([0])}
else:
    space = {"optimizer": grid(["sgd", "momentum", "adam", "rmsprop"]),
             "lr": grid([0.001, 0.01, 0.1]), "seed": grid([0])}

sweep = Sweep(name="linear_regression-quick" if QUICK else "linear_regression", train=train,
              space=space, metric="loss/val", mode="min", checkpoint_every=250)

if __name__ == "__main__":
    sys.exit(sweep.run().exit_status)
