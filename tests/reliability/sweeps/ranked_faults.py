"""Nine ASHA trials whose loss is their ``quality`` at every step, run one at a time, into
which the reliability tests inject faults (tests copy this file).

Run one at a time, the trials reach each rung in index order, so every verdict of the rule
is known in advance and a faulty run must end with exactly the rung records and trial
outcomes of a clean one. A tiny real model trains alongside (session seed 0), so that
checkpoints hold something and a resumed trial computes what an uninterrupted one does.

Rungs at steps 4 and 12 (``max_t`` 36 ends the survivors TERMINATED); a checkpoint every 4
steps (ckpt-4 after step 3, ...), and one at the rung where a trial is stopped.

Every call of ``train`` appends its start step to ``calls/<trial id>`` and the steps at
which that attempt's ``report`` waits for the scheduler's verdict (space-separated) to
``waits/<trial id>``, both beside this file.

Faults are armed by the test, per trial, with files in ``control/<trial id>/`` beside this
file (as in ``faults.py``); each fires once:

- ``pause``: ``<step>``: after reporting that step (and checkpointing when due, the stop
  checkpoint included: then before the trial's end is recorded), write ``paused``
  (``{"pid", "step"}``) and wait, training nothing, until the test removes it.
"""

import json
import os
import time
from pathlib import Path

import numpy as np

import engine as en
from service import Sweep, asha, grid
from service.trial import TrialStopped

HERE = Path(__file__).resolve().parent
CALLS = HERE / "calls"
WAITS = HERE / "waits"
CONTROL = HERE / "control"
QUALITIES = [0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4]
STEPS = 40


def armed(trial_id, fault):
    """The argument of an armed fault, consumed (None when not armed)."""
    path = CONTROL / trial_id / fault
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    path.unlink()
    return text


def peek(trial_id, fault):
    try:
        return (CONTROL / trial_id / fault).read_text().strip()
    except FileNotFoundError:
        return None


def pause(trial_id, step, timeout=300.0):
    """Stop here until the test removes ``paused``."""
    path = CONTROL / trial_id / "paused"
    path.write_text(json.dumps({"pid": os.getpid(), "step": step}))
    deadline = time.monotonic() + timeout
    while path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody removed {path}")
        time.sleep(0.01)


def train(config, trial):
    CALLS.mkdir(exist_ok=True)
    WAITS.mkdir(exist_ok=True)
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    logits = en.layers.dense(x, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    train_op = en.optim.SGD(lr=0.1).minimize(loss)
    inputs = np.random.default_rng(0).uniform(-1, 1, (16, 2)).astype(np.float32)
    feed = {x: inputs, y: (inputs[:, :1] > 0).astype(np.float32)}
    sess = en.Session(seed=0)
    start = trial.restore(sess)
    with open(CALLS / trial.id, "a") as calls:
        calls.write(f"{start}\n")
    with open(WAITS / trial.id, "a") as waits:
        waits.write(" ".join(str(s) for s in trial.task.sync.steps) + "\n")
    for step in range(start, STEPS):
        _, fit = sess.run([train_op, loss], feed=feed)
        trial.report(step, loss=config["quality"], fit=fit)
        if trial.should_checkpoint(step):
            try:
                trial.checkpoint(sess, step)
            except TrialStopped:   # the stop checkpoint is saved; the trial's end is next
                pause_if_armed(trial, step)
                raise
        pause_if_armed(trial, step)


def pause_if_armed(trial, step):
    if peek(trial.id, "pause") == str(step):
        armed(trial.id, "pause")
        pause(trial.id, step)


sweep = Sweep(name="ranked_faults", train=train, space={"quality": grid(QUALITIES)},
              metric="loss", mode="min", max_concurrent=1, checkpoint_every=4, max_failures=2,
              scheduler=asha(grace_period=4, reduction_factor=3, max_t=36))

if __name__ == "__main__":
    sweep.run()
