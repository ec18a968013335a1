"""Optuna search over four hyperparameters (tests): ``loss`` is a known function of the
config, a tiny real model trains alongside (so checkpoints hold something), ``fail=True``
raises. ``GRADSWEEP_TEST_STEP_SECONDS`` slows each step (for tests that kill a driver)."""

import os
import time

import numpy as np

import engine as en
from service import Sweep, choice, loguniform, optuna_search, randint, uniform

STEPS = 30
PAUSE = float(os.environ.get("GRADSWEEP_TEST_STEP_SECONDS", "0"))


def loss_of(config: dict, step: int) -> float:
    return (config["x"] - 0.3) ** 2 + abs(np.log10(config["lr"]) + 2) / 10 + \
        config["k"] / 20 + 1.0 / (step + 1)


def train(config, trial):
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    logits = en.layers.dense(x, 1, name="out")
    fit = en.losses.sigmoid_cross_entropy(logits, y)
    train_op = en.optim.SGD(lr=0.1).minimize(fit)
    inputs = np.random.default_rng(0).uniform(-1, 1, (16, 2)).astype(np.float32)
    feed = {x: inputs, y: (inputs[:, :1] > 0).astype(np.float32)}
    sess = en.Session(seed=0)
    for step, _ in trial.steps(sess, STEPS):
        sess.run(train_op, feed=feed)
        if config["fail"] and step == 3:
            raise RuntimeError("this configuration fails")
        time.sleep(PAUSE)
        trial.report(step, loss=loss_of(config, step))


sweep = Sweep(name="tpe", train=train, metric="loss", mode="min", num_samples=10,
              space={"x": uniform(0, 1), "lr": loguniform(1e-4, 1e-1), "k": randint(0, 4),
                     "fail": choice([False, False, False, True])},
              search=optuna_search(sampler="tpe", seed=0), max_concurrent=2, max_failures=0,
              checkpoint_every=5)
