"""A 12-trial grid of tiny trials (tests): lr x hidden x seed on an XOR-like problem.

Each call of ``train`` appends a line to ``calls/<trial id>`` beside this file, so tests
count how often a trial ran. Tests copy this file to a temporary folder before using it.
"""

from pathlib import Path

import numpy as np

import engine as en
from service import Sweep, grid

CALLS = Path(__file__).resolve().parent / "calls"
STEPS = 30


def train(config, trial):
    CALLS.mkdir(exist_ok=True)
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    hidden = en.layers.dense(x, config["hidden"], activation="relu", name="hidden")
    logits = en.layers.dense(hidden, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    accuracy = en.metrics.accuracy(logits, y)
    train_op = en.optim.SGD(lr=config["lr"], momentum=0.9).minimize(loss)
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-1, 1, (64, 2)).astype(np.float32)
    labels = (inputs[:, :1] * inputs[:, 1:] > 0).astype(np.float32)
    sess = en.Session(seed=config["seed"])
    trial.log_graph(loss)
    start = trial.restore(sess)
    with open(CALLS / trial.id, "a") as calls:
        calls.write(f"{start}\n")
    for step in range(start, STEPS):
        _, loss_value, accuracy_value = sess.run([train_op, loss, accuracy],
                                                 feed={x: inputs, y: labels})
        trial.report(step, loss=loss_value, accuracy=accuracy_value)
        if trial.should_checkpoint(step):
            trial.checkpoint(sess, step)


sweep = Sweep(name="grid12", train=train,
              space={"lr": grid([0.05, 0.2, 0.5]), "hidden": grid([4, 8]), "seed": grid([0, 1])},
              metric="loss", mode="min", checkpoint_every=10)

if __name__ == "__main__":
    sweep.run()
