"""Two inputs, two branches ("deep learning is a language"): raw inputs through one branch,
high-level features through another, concatenated; a sweep over how strongly each branch is
regularised.

A network is a sentence built from a few words (dense layers, concatenation, penalties), so
a model can say what we know about a problem: here, that some of its structure was already
worked out by hand. The target depends on 20 raw inputs through

    y = 1.5 x0 x1 + sin(2 x2) + 0.5 x3 + 0.1 noise

and the high-level branch receives the two hand-made features ``x0 x1`` and ``sin(2 x2)``,
which explain most of it, while the raw branch sees all 20 inputs (17 of them irrelevant) and
must find the linear ``0.5 x3`` on its own from only 300 training examples. Each branch has
its own L2 penalty on its kernels; the sweep shows which mix of penalties generalises best.

    python experiments/two_inputs.py            # the full grid (logs/two_inputs)
    python experiments/two_inputs.py --quick    # four short trials (logs/two_inputs-quick)
    GRADSWEEP_QUICK=1 python -m service launch experiments/two_inputs.py   # the same, quick

Reports ``loss/train`` (mean squared error of the last batch, without the penalties) and
``loss/val`` every epoch, and ``loss/test`` at the last step; the sweep ranks by ``loss/val``.
"""

import os
import sys

import numpy as np

import engine as en
from service import Sweep, grid

QUICK = "--quick" in sys.argv[1:] or os.environ.get("GRADSWEEP_QUICK") == "1"

N_RAW = 20
N_TRAIN, N_VAL, N_TEST = 300, 500, 500
BATCH = 50
STEPS = 600 if QUICK else 3000


def make_data(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{"train" | "val" | "test": (raw (n, 20), features (n, 2), targets (n, 1))}``."""
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_VAL + N_TEST
    raw = rng.standard_normal((n, N_RAW))
    features = np.stack([raw[:, 0] * raw[:, 1], np.sin(2 * raw[:, 2])], axis=1)
    targets = 1.5 * features[:, 0] + features[:, 1] + 0.5 * raw[:, 3] \
        + 0.1 * rng.standard_normal(n)
    arrays = [a.astype(np.float32) for a in (raw, features, targets[:, None])]
    cuts = {"train": slice(0, N_TRAIN), "val": slice(N_TRAIN, N_TRAIN + N_VAL),
            "test": slice(N_TRAIN + N_VAL, n)}
    return {name: tuple(a[cut] for a in arrays) for name, cut in cuts.items()}


def train(config, trial):
    data = make_data()
    raw = en.placeholder((None, N_RAW), name="raw_inputs")
    features = en.placeholder((None, 2), name="high_level_features")
    y = en.placeholder((None, 1), name="y")
    raw_branch = en.layers.mlp(raw, [32, 16], activation="relu", output_activation="relu",
                               name="raw")
    feature_branch = en.layers.dense(features, 8, activation="relu", name="features")
    both = en.concat([raw_branch, feature_branch], axis=1, name="concat")
    prediction = en.layers.dense(both, 1, name="out")
    mse = en.losses.mse(prediction, y, name="mse")

    def kernels(scope):
        return [v for v in en.trainable_variables(prediction)
                if v.name.startswith(scope + "/") and v.name.endswith("/kernel")]

    loss = mse
    for scope, scale in (("raw", config["l2_raw"]), ("features", config["l2_features"])):
        if scale:
            loss = loss + en.losses.l2_penalty(kernels(scope), scale, name=f"l2_{scope}")
    train_op = en.optim.Adam(lr=config["lr"]).minimize(loss)

    sess = en.Session(seed=config["seed"])
    trial.log_graph(loss)
    inputs = (raw, features, y)
    batches = en.data.Batcher(N_TRAIN, BATCH, seed=config["seed"])
    for step, evaluate in trial.steps(sess, STEPS, eval_every=batches.batches_per_epoch):
        batch = batches.batch(step, *data["train"])
        _, train_loss = sess.run([train_op, mse], feed=dict(zip(inputs, batch)))
        if evaluate:
            metrics = {"loss/train": train_loss,
                       "loss/val": sess.run(mse, feed=dict(zip(inputs, data["val"])))}
            if step == STEPS - 1:
                metrics["loss/test"] = sess.run(mse, feed=dict(zip(inputs, data["test"])))
            trial.report(step, metrics)


if QUICK:
    space = {"l2_raw": grid([0.0, 0.1]), "l2_features": grid([0.0, 0.1]), "lr": grid([0.01]),
             "seed": grid([0])}
else:
    space = {"l2_raw": grid([0.0, 0.01, 0.1, 1.0]), "l2_features": grid([0.0, 0.01, 0.1, 1.0]),
             "lr": grid([0.01]), "seed": grid([0, 1])}

sweep = Sweep(name="two_inputs-quick" if QUICK else "two_inputs", train=train, space=space,
              metric="loss/val", mode="min", checkpoint_every=300 if QUICK else 500)

if __name__ == "__main__":
    sys.exit(sweep.run().exit_status)
