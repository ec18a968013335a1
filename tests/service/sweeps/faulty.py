"""Trials that fail on purpose (tests): by ``config["case"]``.

- ``ok``: trains and finishes;
- ``raise_once``: raises after its first checkpoint on its first call only;
- ``always_raise``: raises after the first checkpoint of every call (it runs out of
  retries, though each attempt gets further);
- ``nan``: reports NaN at step 5;
- ``die_once``: kills its worker process after its first checkpoint, first call only.

Every call appends its start step to ``calls/<trial id>`` beside this file.
"""

import os
from pathlib import Path

import numpy as np

import engine as en
from service import Sweep, grid

CALLS = Path(__file__).resolve().parent / "calls"
STEPS = 20


def train(config, trial):
    CALLS.mkdir(exist_ok=True)
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    logits = en.layers.dense(x, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    train_op = en.optim.SGD(lr=0.1).minimize(loss)
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-1, 1, (32, 2)).astype(np.float32)
    labels = (inputs[:, :1] > 0).astype(np.float32)
    sess = en.Session(seed=0)
    start = trial.restore(sess)
    calls_file = CALLS / trial.id
    first_call = not calls_file.exists()
    with open(calls_file, "a") as calls:
        calls.write(f"{start}\n")
    case = config["case"]
    for step in range(start, STEPS):
        _, loss_value = sess.run([train_op, loss], feed={x: inputs, y: labels})
        if case == "nan" and step == 5:
            loss_value = float("nan")
        trial.report(step, loss=loss_value)
        if trial.should_checkpoint(step):
            trial.checkpoint(sess, step)
            if case == "always_raise" or (case == "raise_once" and first_call):
                raise RuntimeError(f"{case} at step {step}")
            if case == "die_once" and first_call:
                os._exit(3)


sweep = Sweep(name="faulty", train=train,
              space={"case": grid(["ok", "raise_once", "always_raise", "nan", "die_once"])},
              metric="loss", mode="min", checkpoint_every=5, max_failures=2)

if __name__ == "__main__":
    sweep.run()
