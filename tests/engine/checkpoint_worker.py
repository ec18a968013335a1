"""The subprocess side of the checkpoint tests: every invocation is one process of a scenario.

    python checkpoint_worker.py train --opt adam --start 0 --stop 14 --out straight.npz
    python checkpoint_worker.py train --opt adam --start 0 --stop 9 --save DIR/ckpt --out a.npz
    python checkpoint_worker.py train --opt adam --start 9 --stop 14 --restore DIR/ckpt-9 ...
    python checkpoint_worker.py crash --point after-manifest-rename --folder DIR --ref ref.npz
    python checkpoint_worker.py save-many --folder DIR --first 1 --last 4 --max-to-keep 3
    python checkpoint_worker.py graph-def --out graph.json

``train`` writes the session's variables (slots included) to ``--out`` when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import numpy as np

import engine as en

N_EXAMPLES, FEATURES, CLASSES, BATCH = 48, 5, 3, 8  # 6 batches per epoch
SEED, DATA_SEED, BATCH_SEED = 3, 123, 7


def build(opt: str = "adam", hidden: tuple[int, ...] = (16, 16), dropout: float = 0.3):
    """A small classifier with dropout; returns (x, y, loss, train_op)."""
    x = en.placeholder((None, FEATURES), name="x")
    y = en.placeholder((None,), dtype=np.int64, name="y")
    h = x
    for i, units in enumerate(hidden):
        h = en.layers.dense(h, units, activation="relu", name=f"hidden{i}")
        if i == 0 and dropout:
            h = en.dropout(h, dropout)
    logits = en.layers.dense(h, CLASSES, name="out")
    loss = en.losses.softmax_cross_entropy(logits, y)
    if opt == "sgd":
        optimizer = en.optim.SGD(lr=0.1, momentum=0.9)
    elif opt == "adam":
        optimizer = en.optim.Adam(lr=0.01)
    else:
        raise SystemExit(f"unknown optimizer {opt!r}")
    return x, y, loss, optimizer.minimize(loss)


def dataset() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(DATA_SEED)
    X = rng.normal(size=(N_EXAMPLES, FEATURES)).astype(np.float32)
    Y = (np.argmax(X[:, :CLASSES], axis=1)).astype(np.int64)
    return X, Y


def run_steps(sess, model, start: int, stop: int) -> None:
    """Train on the shuffled minibatches of global steps ``start .. stop-1``."""
    x, y, _, train = model
    X, Y = dataset()
    batcher = en.data.Batcher(N_EXAMPLES, BATCH, seed=BATCH_SEED)
    for step in range(start, stop):
        xb, yb = batcher.batch(step, X, Y)
        sess.run(train, feed={x: xb, y: yb})


def restore(sess, model, path: str, without: str | None, attach_first: bool) -> None:
    """Restore ``path``; ``without`` leaves out the random state or the optimizer slots
    (the negative controls: a resume that forgets them must come out different)."""
    if attach_first:
        sess.attach(model[3])
    if without == "slots":
        # Everything but the moments/momenta: the model's variables and the step counter.
        sess.attach(model[3])
        keep = [n for n, v in sess.variable_nodes().items()
                if v.trainable or n.endswith("/step")]
        en.Saver(var_list=keep).restore(sess, path)
        return
    en.Saver().restore(sess, path)
    if without == "rng":
        fresh = en.Session(seed=sess.seed).rng.bit_generator.state
        sess.rng.bit_generator.state = fresh


def cmd_train(args) -> None:
    model = build(args.opt)
    sess = en.Session(seed=SEED)
    if args.restore:
        restore(sess, model, args.restore, args.without, args.attach_first)
    run_steps(sess, model, args.start, args.stop)
    if args.save:
        en.Saver().save(sess, args.save, global_step=args.stop)
    np.savez(args.out, **sess.variables())


def cmd_crash(args) -> None:
    """Save ckpt-2, then die hard during the save of ckpt-3 (no cleanup of any kind runs)."""
    model = build("sgd")
    sess = en.Session(seed=SEED)
    saver = en.Saver(max_to_keep=5)
    run_steps(sess, model, 0, 2)
    saver.save(sess, os.path.join(args.folder, "ckpt"), global_step=2)
    np.savez(args.ref, **sess.variables())
    run_steps(sess, model, 2, 3)
    real_replace, calls = os.replace, []

    def dying_replace(src, dst):
        calls.append(dst)
        if args.point == "before-data-rename":      # data file written and fsynced
            os._exit(17)
        real_replace(src, dst)
        if args.point == "after-data-rename" and len(calls) == 1:
            os._exit(17)
        if args.point == "after-manifest-rename" and len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = dying_replace
    saver.save(sess, os.path.join(args.folder, "ckpt"), global_step=3)
    raise SystemExit("the save was expected to die")  # pragma: no cover


def cmd_save_many(args) -> None:
    model = build("sgd", hidden=(4,), dropout=0.0)
    sess = en.Session(seed=SEED)
    saver = en.Saver(max_to_keep=args.max_to_keep)
    for step in range(args.first, args.last + 1):
        run_steps(sess, model, step - 1, step)
        saver.save(sess, os.path.join(args.folder, "ckpt"), global_step=step)


def cmd_graph_def(args) -> None:
    _, _, _, train = build("sgd")
    with open(args.out, "w") as f:
        json.dump(en.graph_def(train), f)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("--opt", choices=("sgd", "adam"), required=True)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--stop", type=int, required=True)
    p.add_argument("--save")
    p.add_argument("--restore")
    p.add_argument("--without", choices=("rng", "slots"))
    p.add_argument("--attach-first", action="store_true")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("crash")
    p.add_argument("--point", required=True, choices=(
        "before-data-rename", "after-data-rename", "after-manifest-rename"))
    p.add_argument("--folder", required=True)
    p.add_argument("--ref", required=True)
    p.set_defaults(fn=cmd_crash)
    p = sub.add_parser("save-many")
    p.add_argument("--folder", required=True)
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--last", type=int, required=True)
    p.add_argument("--max-to-keep", type=int, required=True)
    p.set_defaults(fn=cmd_save_many)
    p = sub.add_parser("graph-def")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_graph_def)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main(sys.argv[1:])
