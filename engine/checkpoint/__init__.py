"""Checkpoint files: their format, reading and verifying them, a folder of them.

A checkpoint ``<prefix>-<global_step>`` is two files in one folder:

- ``<name>.npz``: one array per variable (model variables, optimizer slots and step
  counters), written uncompressed with ``allow_pickle=False``;
- ``<name>.json``: the manifest: names, shapes and dtypes, ``global_step``, wall time, the
  sha256 and size of the ``.npz``, the session's random generator state (its 128-bit
  integers as decimal strings), the numpy/BLAS build and thread settings in use, and a
  sha256 of the manifest itself.

A JSON state file ``checkpoint`` in the folder names the latest checkpoint and the kept
ones (``{"latest": ..., "kept": [...oldest first]}``, names relative to the folder so the
folder can be mounted anywhere). Loading never unpickles: arrays are read straight from the
verified bytes and object arrays are refused. :class:`engine.saver.Saver` writes them.

Modules: ``errors``; ``files`` (one checkpoint: manifest, reading, verifying); ``folder``
(the state file, ``latest_checkpoint``); ``npzio`` (the data file); ``rng_state`` (the
generator's state as JSON); ``environment`` (the numpy/BLAS setup recorded).
"""

from engine.checkpoint.errors import CheckpointError, CheckpointWarning
from engine.checkpoint.files import (checkpoint_path, read_checkpoint, read_manifest,
                                     verify_checkpoint)
from engine.checkpoint.folder import checkpoint_candidates, latest_checkpoint

__all__ = ["CheckpointError", "CheckpointWarning", "checkpoint_candidates", "checkpoint_path",
           "latest_checkpoint", "read_checkpoint", "read_manifest", "verify_checkpoint"]
