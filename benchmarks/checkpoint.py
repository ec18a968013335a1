"""Checkpoint save and restore time against a hand-written durable baseline.

A 784-256-256-10 network trained one step with Adam (variables plus both moment slots,
about 3 MB). Each repeat times, interleaved so both see the same disk:

- save: ``Saver.save`` (npz + manifest + state file, each atomic, retention on) against
  ``np.savez`` to a temporary file + sha256 + fsync + rename + folder fsync;
- restore: ``Saver.restore`` (verify, load without pickle, copy into the session, random
  state) against reading the file + sha256 + ``np.load`` of every array.

The baseline is handed its arrays ready-made; ours takes them from the session. Medians
in milliseconds and our/baseline ratios are printed; the target is <= 1.25x for both.

    python benchmarks/checkpoint.py [--repeats 40] [--dir FOLDER]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

import engine as en

TARGET = 1.25


def trained_session() -> en.Session:
    x = en.placeholder((None, 784), name="x")
    y = en.placeholder((None,), dtype=np.int64, name="y")
    logits = en.layers.mlp(x, [256, 256, 10], name="mlp")
    train = en.optim.Adam(lr=1e-3).minimize(en.losses.softmax_cross_entropy(logits, y))
    sess = en.Session(seed=0)
    rng = np.random.default_rng(0)
    sess.run(train, feed={x: rng.normal(size=(64, 784)).astype(np.float32),
                          y: rng.integers(0, 10, 64)})
    return sess


def fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def baseline_save(arrays: dict, path: str) -> str:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    with open(tmp, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))
    return digest


def baseline_restore(path: str, digest: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"{path} fails its checksum")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def timed(fn, *args):
    """(milliseconds, result) of ``fn(*args)``."""
    start = time.perf_counter()
    result = fn(*args)
    return (time.perf_counter() - start) * 1e3, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--dir", help="folder to write in (default: a temporary folder)")
    args = parser.parse_args()

    sess = trained_session()
    arrays = sess.variables()
    nbytes = sum(a.nbytes for a in arrays.values())
    folder = tempfile.mkdtemp(prefix="ckpt-bench-", dir=args.dir)
    try:
        saver = en.Saver(max_to_keep=3)
        base_path = os.path.join(folder, "baseline.npz")
        times = {k: [] for k in ("save", "base_save", "restore", "base_restore")}
        for i in range(args.repeats + 3):  # the first three are warm-up
            # Alternate who goes first, so neither always follows the other's disk writes.
            sample = {}
            for op in (("save", "base_save") if i % 2 else ("base_save", "save")):
                if op == "save":
                    sample[op], latest = timed(saver.save, sess, os.path.join(folder, "ckpt"), i)
                else:
                    sample[op], digest = timed(baseline_save, arrays, base_path)
            for op in (("restore", "base_restore") if i % 2 else ("base_restore", "restore")):
                if op == "restore":
                    sample[op], _ = timed(saver.restore, sess, latest)
                else:
                    sample[op], _ = timed(baseline_restore, base_path, digest)
            if i >= 3:
                for k, v in sample.items():
                    times[k].append(v)
        med = {k: statistics.median(v) for k, v in times.items()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"checkpoint of {len(arrays)} arrays, {nbytes / 1e6:.2f} MB, "
          f"median of {args.repeats} repeats in {args.dir or tempfile.gettempdir()}")
    ok = True
    for op in ("save", "restore"):
        ratio = med[op] / med[f"base_{op}"]
        ok &= ratio <= TARGET
        print(f"  {op:8s} ours {med[op]:7.2f} ms   baseline {med[f'base_{op}']:7.2f} ms   "
              f"ratio {ratio:.2f}x (target <= {TARGET}x)")
    print("target met" if ok else "TARGET MISSED")


if __name__ == "__main__":
    main()
