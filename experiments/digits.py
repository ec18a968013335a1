"""Handwritten digits: a real data set, a grid over width, depth, optimizer, learning rate and
L2 weight decay.

The 1797 8×8 digit images scikit-learn ships inside its package (``load_digits``: no
download; ``pip install -e '.[experiments]'``), pixels scaled to [0, 1], split once with a
fixed seed into 1077 images to train on, 360 to validate and 360 to test. The model is an MLP
with ReLU hidden layers and a softmax output, trained on cross-entropy (+ L2 on the kernels)
in batches of 64.

    python experiments/digits.py            # the full grid (logs/digits)
    python experiments/digits.py --quick    # two short trials (logs/digits-quick)
    GRADSWEEP_QUICK=1 python -m service launch experiments/digits.py   # the same, quick

Reports ``loss/train`` (the last batch), ``loss/val`` and ``accuracy/val`` every epoch, and
``accuracy/test`` at the last step; the sweep ranks trials by ``accuracy/val`` (the test
images are never used to choose). The full grid runs under ASHA: a trial whose validation
accuracy is not in the top third of those recorded at 100, 300 or 900 steps stops there.
"""

import os
import sys

import numpy as np

import engine as en
from service import Sweep, asha, grid

QUICK = "--quick" in sys.argv[1:] or os.environ.get("GRADSWEEP_QUICK") == "1"

BATCH = 64
STEPS = 400 if QUICK else 2000
N_VAL = N_TEST = 360


def load_splits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train" | "val" | "test": (images (n, 64) float32 in [0, 1], labels (n,) int64)}``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    images = (digits.data[order] / 16.0).astype(np.float32)
    labels = digits.target[order].astype(np.int64)
    cut_val, cut_test = len(labels) - N_VAL - N_TEST, len(labels) - N_TEST
    return {"train": (images[:cut_val], labels[:cut_val]),
            "val": (images[cut_val:cut_test], labels[cut_val:cut_test]),
            "test": (images[cut_test:], labels[cut_test:])}


def train(config, trial):
    data = load_splits()
    x = en.placeholder((None, 64), name="images")
    y = en.placeholder((None,), dtype=np.int64, name="labels")
    sizes = [config["width"]] * config["depth"] + [10]
    logits = en.layers.mlp(x, sizes, activation="relu", name="mlp")
    cross_entropy = en.losses.softmax_cross_entropy(logits, y, name="cross_entropy")
    kernels = [v for v in en.trainable_variables(logits) if v.name.endswith("/kernel")]
    loss = cross_entropy
    if config["l2"]:
        loss = cross_entropy + en.losses.l2_penalty(kernels, config["l2"], name="l2")
    accuracy = en.metrics.accuracy(logits, y, name="accuracy")
    if config["optimizer"] == "adam":
        optimizer = en.optim.Adam(lr=config["lr"])
    else:
        optimizer = en.optim.SGD(lr=config["lr"], momentum=0.9)
    train_op = optimizer.minimize(loss)

    sess = en.Session(seed=config["seed"])
    trial.log_graph(loss)
    train_x, train_y = data["train"]
    batches = en.data.Batcher(len(train_y), BATCH, seed=config["seed"])
    for step, evaluate in trial.steps(sess, STEPS, eval_every=batches.batches_per_epoch):
        batch_x, batch_y = batches.batch(step, train_x, train_y)
        _, train_loss = sess.run([train_op, cross_entropy], feed={x: batch_x, y: batch_y})
        if evaluate:
            val_loss, val_accuracy = sess.run([cross_entropy, accuracy],
                                              feed=dict(zip((x, y), data["val"])))
            metrics = {"loss/train": train_loss, "loss/val": val_loss,
                       "accuracy/val": val_accuracy}
            if step == STEPS - 1:
                metrics["accuracy/test"] = sess.run(accuracy, feed=dict(zip((x, y),
                                                                            data["test"])))
            trial.report(step, metrics)


if QUICK:
    space = {"width": grid([64]), "depth": grid([1]), "optimizer": grid(["adam", "momentum"]),
             "lr": grid([0.01]), "l2": grid([0.0]), "seed": grid([0])}
else:
    space = {"width": grid([32, 128]), "depth": grid([1, 2]),
             "optimizer": grid(["momentum", "adam"]), "lr": grid([0.001, 0.01]),
             "l2": grid([0.0, 0.001]), "seed": grid([0])}

# ASHA stops the trials that lag at 100, 300 and 900 steps (the top third goes on): the
# full grid's laggards (momentum at lr 0.001) are known after a few epochs.
sweep = Sweep(name="digits-quick" if QUICK else "digits", train=train, space=space,
              metric="accuracy/val", mode="max", checkpoint_every=200 if QUICK else 500,
              scheduler=None if QUICK else asha(grace_period=100, reduction_factor=3,
                                                max_t=STEPS))

if __name__ == "__main__":
    sys.exit(sweep.run().exit_status)
