"""Nine trials whose loss is their ``quality`` at every step (tests of early stopping): run
one at a time, their order of arrival at a rung is their index, so every decision of a rule
can be worked out in advance. A tiny real model trains alongside, so checkpoints hold
something."""

import numpy as np

import engine as en
from service import Sweep, asha, grid

QUALITIES = [0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4]
STEPS = 100


def train(config, trial):
    x = en.placeholder((None, 2), name="x")
    y = en.placeholder((None, 1), name="y")
    logits = en.layers.dense(x, 1, name="out")
    loss = en.losses.sigmoid_cross_entropy(logits, y)
    train_op = en.optim.SGD(lr=0.1).minimize(loss)
    inputs = np.random.default_rng(0).uniform(-1, 1, (16, 2)).astype(np.float32)
    feed = {x: inputs, y: (inputs[:, :1] > 0).astype(np.float32)}
    sess = en.Session(seed=0)
    for step, _ in trial.steps(sess, STEPS):
        _, fit = sess.run([train_op, loss], feed=feed)
        trial.report(step, loss=config["quality"], fit=fit)


sweep = Sweep(name="ranked", train=train, space={"quality": grid(QUALITIES)}, metric="loss",
              mode="min", max_concurrent=1, checkpoint_every=5,
              scheduler=asha(grace_period=10, reduction_factor=3, max_t=90))
