"""Five small trials into which the reliability tests inject faults (tests copy this file).

The model uses everything a resume must restore bit for bit: Adam's moments and step counter,
dropout drawing from the session's generator, and shuffled minibatches addressed by step. A
trial runs ``STEPS`` steps, reports ``loss``, ``accuracy`` and ``loss/full`` every step and
checkpoints every 10 steps. Every call of ``train`` appends its start step to
``calls/<trial id>`` beside this file.

Faults are armed by the test, per trial, with files in ``control/<trial id>/`` beside this
file. Each fires once (the file is removed when it fires), so the retry runs clean. The
``config`` holds nothing but the seed: a faulty trial computes what the clean trial computes.

- ``pause``: ``<step>`` (after reporting that step and checkpointing when due) or
  ``resume`` (at the start of a call that restored a checkpoint): write ``paused``
  (``{"pid", "step"}``) and wait, training nothing, until the test removes ``paused``.
- ``orphan`` (with a ``pause``): at the pause, fork a copy of this process that goes on
  with the same attempt once ``release`` exists, as a worker that outlived its driver would;
  its pid goes to ``orphan.pid``, what stopped it to ``orphan-<pid>`` (``{"step", "error"}``).
- ``enospc-event``: ``<step>``: the disk fills while that step's report writes its event (a
  short write, then ENOSPC).
- ``enospc-checkpoint``: ``<step>``: the disk fills while that step's checkpoint writes its
  data file (ENOSPC after a few hundred bytes).
- ``die``: ``<step> <point>``: the process dies during that step's checkpoint, at
  ``data-written`` (os._exit once the data file is written and fsynced, before its rename),
  ``after-data-rename`` (os._exit) or ``before-state-file`` (SIGKILL once the data file and
  manifest are renamed into place, before the state file naming them is).
"""

import errno
import json
import os
import signal
import time
from pathlib import Path

import numpy as np

import engine as en
from service import Sweep, grid

HERE = Path(__file__).resolve().parent
CALLS = HERE / "calls"
CONTROL = HERE / "control"
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


def wait_while(path, timeout=300.0):
    deadline = time.monotonic() + timeout
    while path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody removed {path}")
        time.sleep(0.01)


def wait_until(path, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody created {path}")
        time.sleep(0.01)


def pause(trial_id, step, go_on=None):
    """Stop here until the test removes ``paused``; with an ``orphan`` armed, first fork a
    copy of this process that runs ``go_on`` once the test writes ``release``."""
    folder = CONTROL / trial_id
    if armed(trial_id, "orphan") is not None:
        child = os.fork()
        if child == 0:
            # Out of this worker's process group and off its list of children (a daemon's
            # double fork): Ray reaps what it knows of a dead worker, this copy lives on.
            os.setsid()
            if os.fork():
                os._exit(0)
            (folder / "orphan.pid").write_text(str(os.getpid()))
            outcome = {"step": None, "error": None}
            try:
                wait_until(folder / "release")
                outcome["step"] = go_on()
            except BaseException as err:  # noqa: BLE001 - what stopped the orphan is the point
                outcome["error"] = f"{type(err).__name__}: {err}"
            finally:
                (folder / f"orphan-{os.getpid()}").write_text(json.dumps(outcome))
                os._exit(0)   # never return into the Ray worker this is a copy of
        os.waitpid(child, 0)
    (folder / "paused").write_text(json.dumps({"pid": os.getpid(), "step": step}))
    wait_while(folder / "paused")


def fill_disk_on_next_write():
    """The next os.write writes half its bytes, the one after raises ENOSPC; then normal."""
    real_write = os.write
    calls = []

    def write(fd, data):
        calls.append(fd)
        if len(calls) == 1:
            view = memoryview(data)
            return real_write(fd, view[:max(1, len(view) // 2)])
        os.write = real_write
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.write = write


class FullDisk:
    """A file that takes ``room`` bytes, then fails every write with ENOSPC."""

    def __init__(self, file, room=300):
        self.file, self.room = file, room

    def write(self, data):
        data = bytes(data)
        if len(data) > self.room:
            self.file.write(data[:self.room])
            self.file.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def fill_disk_on_next_checkpoint():
    """The next checkpoint data file the Saver opens runs out of space (once)."""
    import builtins

    import engine.atomic as atomic

    def open_(path, mode="r", *args, **kwargs):
        file = builtins.open(path, mode, *args, **kwargs)
        if mode == "xb" and ".npz." in os.path.basename(path):
            del atomic.open
            return FullDisk(file)
        return file

    atomic.open = open_


def die_during_next_checkpoint(point):
    """Die hard at ``point`` of the next checkpoint (no cleanup code runs)."""
    real_replace = os.replace
    renamed = []

    def replace(src, dst):
        renamed.append(dst)
        if point == "data-written":
            os._exit(17)
        real_replace(src, dst)
        if point == "after-data-rename" and len(renamed) == 1:
            os._exit(17)
        if point == "before-state-file" and len(renamed) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace


def train(config, trial):
    CALLS.mkdir(exist_ok=True)
    x = en.placeholder((None, 4), name="x")
    y = en.placeholder((None, 1), name="y")
    hidden = en.layers.dense(x, 16, activation="tanh", name="hidden")
    logits = en.layers.dense(en.dropout(hidden, 0.2), 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    accuracy = en.metrics.accuracy(logits, y)
    train_op = en.optim.Adam(lr=0.05).minimize(loss)
    rng = np.random.default_rng(1234)
    inputs = rng.normal(size=(96, 4)).astype(np.float32)
    labels = (inputs[:, :1] * inputs[:, 1:2] + inputs[:, 2:3] > 0).astype(np.float32)
    batches = en.data.Batcher(len(inputs), 16, seed=config["seed"])
    sess = en.Session(seed=config["seed"])
    trial.log_graph(loss)
    start = trial.restore(sess)
    with open(CALLS / trial.id, "a") as calls:
        calls.write(f"{start}\n")
    if start > 0 and peek(trial.id, "pause") == "resume":
        armed(trial.id, "pause")
        pause(trial.id, start)
    position = {"step": start}

    def run(first):
        for step in range(first, STEPS):
            position["step"] = step
            batch_x, batch_y = batches.batch(step, inputs, labels)
            _, loss_value, accuracy_value = sess.run([train_op, loss, accuracy],
                                                     feed={x: batch_x, y: batch_y})
            full = sess.run(loss, feed={x: inputs, y: labels})
            if peek(trial.id, "enospc-event") == str(step):
                armed(trial.id, "enospc-event")
                fill_disk_on_next_write()
            trial.report(step, {"loss": loss_value, "accuracy": accuracy_value,
                                "loss/full": full})
            if trial.should_checkpoint(step):
                if peek(trial.id, "enospc-checkpoint") == str(step):
                    armed(trial.id, "enospc-checkpoint")
                    fill_disk_on_next_checkpoint()
                die = (peek(trial.id, "die") or "").split()
                if die and die[0] == str(step):
                    armed(trial.id, "die")
                    die_during_next_checkpoint(die[1])
                trial.checkpoint(sess, step)
            if peek(trial.id, "pause") == str(step):
                armed(trial.id, "pause")
                pause(trial.id, step, go_on=lambda: run(step + 1))
        return position["step"]

    run(start)


sweep = Sweep(name="faults", train=train, space={"seed": grid([0, 1, 2, 3, 4])},
              metric="loss/full", mode="min", checkpoint_every=10, max_failures=2)

if __name__ == "__main__":
    sweep.run()
