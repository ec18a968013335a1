"""A small sweep that ``test_job_submit.py`` submits to a cluster as a Ray job.

Linear regression ``y = 3 x - 1`` plus a little noise (64 points, fixed), one dense unit
trained by full-batch SGD for ``STEPS`` steps at three learning rates. In that many steps the
largest rate gets nearest the noise floor and the smallest stays far from it, so the ranking
is known: ``lr=0.5`` best, then ``0.1``, then ``0.01``.

When the environment names a file in ``GRADSWEEP_TEST_GATE``, each trial, once it has reported
step 0, writes ``waiting-<trial id>`` beside that file and waits (60 s at most) until the file
exists: the test opens the gate only after the submitting command has exited, so the sweep
provably runs on without it. Without the variable the sweep runs straight through.
"""

import os
import time
from pathlib import Path

import numpy as np

import engine as en
from service import Sweep, grid

STEPS = 30
GATE = "GRADSWEEP_TEST_GATE"


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (64, 1))
    y = 3.0 * x - 1.0 + 0.1 * rng.standard_normal((64, 1))
    return x.astype(np.float32), y.astype(np.float32)


def wait_at_gate(trial_id: str) -> None:
    gate = os.environ.get(GATE)
    if not gate:
        return
    gate = Path(gate)
    (gate.parent / f"waiting-{trial_id}").write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def train(config, trial):
    x = en.placeholder((None, 1), name="x")
    y = en.placeholder((None, 1), name="y")
    prediction = en.layers.dense(x, 1, name="out")
    loss = en.losses.mse(prediction, y)
    train_op = en.optim.SGD(lr=config["lr"]).minimize(loss)
    inputs, targets = data()
    sess = en.Session(seed=0)
    trial.log_graph(loss)
    start = trial.restore(sess)
    for step in range(start, STEPS):
        _, value = sess.run([train_op, loss], feed={x: inputs, y: targets})
        trial.report(step, loss=value)
        if step == 0:
            wait_at_gate(trial.id)
        if trial.should_checkpoint(step):
            trial.checkpoint(sess, step)


sweep = Sweep(name="submitted", train=train, space={"lr": grid([0.01, 0.1, 0.5])},
              metric="loss", mode="min", checkpoint_every=10)

if __name__ == "__main__":
    sweep.run()
