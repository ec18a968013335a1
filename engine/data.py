"""Minibatches whose order is a pure function of (seed, epoch), addressable by step.

Training can therefore resume in the middle of an epoch: the batch for step ``s`` is the
same whether the process ran steps ``0 .. s-1`` or was just restored at ``s``.
"""

from __future__ import annotations

import numpy as np


class Batcher:
    """Index batches over ``n`` examples: shuffled per epoch from ``(seed, epoch)``.

    ``drop_last`` (default) keeps every batch the same size, so a plan's buffers never change
    shape; otherwise the last batch of an epoch holds the remainder.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True):
        if n < 1 or batch_size < 1:
            raise ValueError(f"Batcher needs n >= 1 and batch_size >= 1, got n={n}, "
                             f"batch_size={batch_size}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"Batcher seed must be a non-negative integer, got {seed!r}")
        if drop_last and batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the {n} examples "
                             "(use drop_last=False)")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.batches_per_epoch = n // batch_size if drop_last else -(-n // batch_size)
        self._epoch: int | None = None
        self._order: np.ndarray | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The permutation of example indices used in ``epoch``."""
        if epoch != self._epoch:
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            else:
                self._order = np.arange(self.n)
            self._epoch = epoch
        return self._order

    def indices(self, step: int) -> np.ndarray:
        """The example indices of the batch for global step ``step``."""
        if step < 0:
            raise ValueError(f"Batcher: step must be >= 0, got {step}")
        epoch, i = divmod(int(step), self.batches_per_epoch)
        order = self.epoch_order(epoch)
        return order[i * self.batch_size:(i + 1) * self.batch_size]

    def batch(self, step: int, *arrays: np.ndarray):
        """``arrays`` indexed by the batch for ``step`` (a tuple, or one array)."""
        for i, a in enumerate(arrays):
            if len(a) != self.n:
                raise ValueError(f"Batcher.batch: array {i} has {len(a)} rows, the batcher "
                                 f"was made for {self.n} examples")
        idx = self.indices(step)
        out = tuple(a[idx] for a in arrays)
        return out[0] if len(out) == 1 else out

