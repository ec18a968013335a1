"""Slow tiny trials (tests): long enough to kill or interrupt the driver mid-sweep.

``train`` runs ``steps(config)`` steps (60, 120 or 180 by seed, so late trials outlast the
second a killed driver's workers go on), sleeps a little every step, checkpoints every 10
steps, appends its start step to ``calls/<trial id>`` beside this file, and reports the tag
``fresh/loss`` only in attempts that started from step 0: a tag that is not reported again
after a resume.
"""

import time
from pathlib import Path

import numpy as np

import engine as en
from service import Sweep, grid

CALLS = Path(__file__).resolve().parent / "calls"
SLEEP = 0.02


def steps(config):
    return 60 * (1 + config["seed"])


def train(config, trial):
    CALLS.mkdir(exist_ok=True)
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    hidden = en.layers.dense(x, 8, activation="tanh", name="hidden")
    logits = en.layers.dense(hidden, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    train_op = en.optim.Adam(lr=config["lr"]).minimize(loss)
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-1, 1, (128, 2)).astype(np.float32)
    labels = (inputs[:, :1] * inputs[:, 1:] > 0).astype(np.float32)
    batches = en.data.Batcher(len(inputs), 32, seed=config["seed"])
    sess = en.Session(seed=config["seed"])
    trial.log_graph(loss)
    start = trial.restore(sess)
    with open(CALLS / trial.id, "a") as calls:
        calls.write(f"{start}\n")
    for step in range(start, steps(config)):
        batch_x, batch_y = batches.batch(step, inputs, labels)
        _, loss_value = sess.run([train_op, loss], feed={x: batch_x, y: batch_y})
        metrics = {"loss": loss_value, "loss/full": sess.run(loss, feed={x: inputs, y: labels})}
        if start == 0:
            metrics["fresh/loss"] = loss_value
        trial.report(step, metrics)
        if trial.should_checkpoint(step):
            trial.checkpoint(sess, step)
        time.sleep(SLEEP)


sweep = Sweep(name="slow", train=train,
              space={"lr": grid([0.01, 0.03]), "seed": grid([0, 1, 2])},
              metric="loss/full", mode="min", checkpoint_every=10)

if __name__ == "__main__":
    sweep.run()
