"""The Saver: writes a Session's checkpoints atomically, keeps the newest, restores them
bit for bit (TensorFlow 1's ``Saver``). The files are described in :mod:`engine.checkpoint`.

Every file is written under a temporary name, flushed, fsynced and renamed, and the folder
fsynced; the state file is replaced last, so a crash at any moment leaves it naming
complete checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import re
import time
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from engine.atomic import BackgroundFsync, TempFile, fsync_dir, publish
from engine.checkpoint.environment import environment_differences
from engine.checkpoint.errors import CheckpointError, CheckpointWarning
from engine.checkpoint.files import (checkpoint_files, checkpoint_path, new_manifest,
                                     read_checkpoint)
from engine.checkpoint.folder import (STATE_FILE, STATE_VERSION, names_on_disk, read_state,
                                      wall_time)
from engine.checkpoint.npzio import write_npz
from engine.checkpoint.rng_state import decode_rng_state, encode_rng_state
from engine.graph import GraphError, Variable, format_shape

__all__ = ["Saver"]

STEP_SUFFIX = r"(-\d+)?"


def _json_temp(path: str, obj) -> TempFile:
    temp = TempFile(path)
    temp.file.write((json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    return temp


class Saver:
    """Saves and restores every variable of a Session and its random state (TF1-style).

    ``max_to_keep`` newest checkpoints are kept (``None`` or 0: all); with
    ``keep_every_n_hours``, one checkpoint per that many hours is kept as well, for good.
    ``var_list`` (variables or names) restricts what is saved and restored; by default
    it is everything the session holds: model variables, optimizer slots, step counters.
    Retention continues across processes: the first save into a folder reads its state
    file and the checkpoints on disk.
    """

    def __init__(self, max_to_keep: int | None = 5, keep_every_n_hours: float | None = None,
                 var_list: Sequence[Variable | str] | None = None):
        if max_to_keep is not None and (not isinstance(max_to_keep, int)
                                        or isinstance(max_to_keep, bool) or max_to_keep < 0):
            raise ValueError(f"Saver: max_to_keep must be None or an integer >= 0, got "
                             f"{max_to_keep!r}")
        if keep_every_n_hours is not None and not keep_every_n_hours > 0:
            raise ValueError(f"Saver: keep_every_n_hours must be positive, got "
                             f"{keep_every_n_hours!r}")
        if var_list is not None:
            var_list = list(var_list)
            for v in var_list:
                if not isinstance(v, (str, Variable)):
                    raise TypeError(f"Saver: var_list holds variables or names, not "
                                     f"{type(v).__name__} {v!r}")
        self.max_to_keep = max_to_keep or None
        self.keep_every_n_hours = keep_every_n_hours
        self.var_list = var_list
        self._folder: str | None = None
        self._kept: list[str] = []        # this prefix's checkpoints, oldest first
        self._pattern = re.compile("")  # this Saver's names: the prefix, -<step>
        self._preserved: list[str] = []
        self._last_preserved = 0.0

    @property
    def last_checkpoints(self) -> list[str]:
        """Paths of the kept checkpoints, oldest first."""
        if self._folder is None:
            return []
        return [os.path.join(self._folder, name) for name in self._kept]

    # -- saving
    def save(self, sess, prefix: str | os.PathLike, global_step: int | None = None) -> str:
        """Write checkpoint ``<prefix>-<global_step>`` and return its path (no extension).

        ``global_step`` counts completed steps (TensorFlow's convention). Files are
        written atomically and the state file last; old checkpoints beyond ``max_to_keep``
        are then deleted.
        """
        prefix = os.fspath(prefix)
        folder, base = os.path.split(prefix)
        if not base:
            raise ValueError(f"Saver.save: prefix {prefix!r} names a folder; give a file "
                             "prefix such as 'checkpoints/ckpt'")
        folder = folder or "."
        if global_step is not None:
            try:
                step = operator.index(global_step)
            except TypeError:
                step = -1  # refused just below
            if step < 0 or isinstance(global_step, (bool, np.bool_)):
                raise ValueError(f"Saver.save: global_step must be a non-negative integer, "
                                 f"got {global_step!r}")
            global_step = step
        name = base if global_step is None else f"{base}-{global_step}"
        arrays = self._arrays(sess)
        rng_state = encode_rng_state(sess.rng.bit_generator.state)
        self._open_folder(folder, base)
        if name in self._kept or name in self._preserved:
            # Overwriting a named checkpoint: first stop naming it, so the state file never
            # names a half-replaced one.
            self._kept = [n for n in self._kept if n != name]
            self._preserved = [n for n in self._preserved if n != name]
            state_temp = _json_temp(os.path.join(folder, STATE_FILE), self._state())
            state_temp.fsync()
            publish(folder, [state_temp])
        path = os.path.join(folder, name)
        data_file, manifest_file = checkpoint_files(path)
        before = (list(self._kept), list(self._preserved), self._last_preserved)
        temps: list[TempFile] = []
        syncing = None
        try:
            temps.append(TempFile(data_file))
            size, sha256 = write_npz(temps[0].file, arrays)
            # The data file's fsync (the long one) runs while the small files are written;
            # concurrent fsyncs also share the filesystem's journal commits.
            syncing = BackgroundFsync(temps[0])
            temps.append(_json_temp(manifest_file, new_manifest(
                name, global_step, size, sha256, arrays, rng_state)))
            self._kept.append(name)
            dropped = self._apply_retention()
            state = self._state()
            temps.append(_json_temp(os.path.join(folder, STATE_FILE), state))
            for temp in temps[1:]:
                temp.fsync()
            syncing.join()
            syncing = None
            # The checkpoint's files first, the state file naming it last.
            publish(folder, temps[:2], temps[2:])
        except BaseException:
            if syncing is not None:
                with contextlib.suppress(BaseException):
                    syncing.join()  # never close a file another thread is syncing
            for temp in temps:
                temp.discard()
            self._kept, self._preserved, self._last_preserved = before
            raise
        named = set(state["kept"]) | set(state["preserved"])
        for old in dropped:
            self._delete(old, named)
        return path

    def _arrays(self, sess) -> dict[str, np.ndarray]:
        # The session's own arrays, not copies: saving only reads them, and copying 3 MB
        # would cost as much as hashing it.
        values = sess.variables(copy=False)
        if not values:
            raise GraphError("Saver.save: the session holds no variables yet; run or "
                             "attach the graph first")
        if self.var_list is None:
            return values
        names = self._var_names(sess)
        missing = [n for n in names if n not in values]
        if missing:
            raise GraphError(f"Saver.save: var_list names variables this session does not "
                             f"hold: {', '.join(missing)}")
        return {n: values[n] for n in names}

    def _var_names(self, sess) -> list[str]:
        """The names in ``var_list``: a variable node is named as the session knows it."""
        by_node = {node: name for name, node in sess.variable_nodes().items()}
        names = []
        for v in self.var_list:
            if isinstance(v, str):
                names.append(v)
            elif v in by_node:
                names.append(by_node[v])
            elif v.given_name is not None:
                names.append(v.given_name)
            else:
                raise GraphError(f"Saver: var_list holds an unnamed {v.describe()} the "
                                 "session has not run; name it or pass its name")
        return names

    # -- retention
    def _open_folder(self, folder: str, base: str) -> None:
        """Continue the retention of ``folder``: from its state file and the files on disk.

        Only checkpoints of this prefix (``base``, ``base-<step>``) are managed; other
        prefixes' entries in the shared state file are left as they are.
        """
        if folder == self._folder and self._pattern.pattern == re.escape(base) + STEP_SUFFIX:
            return
        if not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
            fsync_dir(os.path.dirname(os.path.abspath(folder)))  # the new folder's entry
        self._pattern = re.compile(re.escape(base) + STEP_SUFFIX)
        state = read_state(folder) or {}
        named = [n for n in state.get("kept", []) if isinstance(n, str)]
        self._preserved = [n for n in state.get("preserved", [])
                           if isinstance(n, str) and self._pattern.fullmatch(n)]
        try:
            self._last_preserved = float(state["last_preserved_time"])
        except (KeyError, TypeError, ValueError):
            self._last_preserved = time.time()
        own = {n for n in named + names_on_disk(folder) if self._pattern.fullmatch(n)}
        own -= set(self._preserved)
        self._kept = sorted(own, key=lambda n: (wall_time(os.path.join(folder, n)), n))
        self._folder = folder

    def _apply_retention(self) -> list[str]:
        """Drop the oldest checkpoints beyond ``max_to_keep``; return those to delete."""
        dropped = []
        while self.max_to_keep is not None and len(self._kept) > self.max_to_keep:
            old = self._kept.pop(0)
            saved_at = wall_time(os.path.join(self._folder, old))
            if self.keep_every_n_hours is not None and \
                    saved_at >= self._last_preserved + self.keep_every_n_hours * 3600:
                self._preserved.append(old)
                self._last_preserved = saved_at
            else:
                dropped.append(old)
        return dropped

    def _state(self) -> dict:
        """The state file's new content: this prefix's entries after other prefixes'."""
        current = read_state(self._folder) or {}

        def others(key):
            return [n for n in current.get(key, []) if isinstance(n, str)
                    and not self._pattern.fullmatch(n)]

        return {"format": STATE_VERSION, "latest": self._kept[-1] if self._kept else None,
                "kept": others("kept") + self._kept,
                "preserved": others("preserved") + self._preserved,
                "last_preserved_time": self._last_preserved}

    def _delete(self, name: str, named: set[str]) -> None:
        if name in named:
            return  # never remove a checkpoint the state file names
        # Manifest first: a checkpoint without its manifest is never taken for a valid one.
        for file in reversed(checkpoint_files(os.path.join(self._folder, name))):
            try:
                os.unlink(file)
            except FileNotFoundError:
                pass

    # -- restoring
    def restore(self, sess, path: str | os.PathLike | None, sha256: str | None = None
                ) -> int | None:
        """Load checkpoint ``path`` into ``sess``: every variable in place, and the random
        state. Returns the checkpoint's ``global_step`` (the next step to run), or None if it
        was saved without one; :func:`engine.checkpoint.verify_checkpoint` gives the whole
        manifest.

        The sha256 is verified first. If the session already knows its variables (the graph
        was run or attached) they must match the checkpoint exactly: one error lists every
        missing, unexpected, mis-shaped and mis-typed variable. Otherwise every array is
        loaded and the session checks later graphs against it (``sess.restored_from``).

        ``sha256``: the data's digest as the caller verified it earlier (knowing the file
        has not changed since): the data is then read but not hashed again.
        """
        if path is None:
            raise CheckpointError("Saver.restore: no checkpoint path (latest_checkpoint found "
                                  "none?)")
        path = checkpoint_path(path)
        arrays, manifest = read_checkpoint(path, sha256)
        known = sess.variable_nodes()
        wanted = list(arrays) if self.var_list is None else self._var_names(sess)
        problems = self._differences(sess, arrays, known, wanted)
        if problems:
            raise GraphError(f"the graph does not match checkpoint {path}:\n  "
                             + "\n  ".join(problems))
        rng_state = None
        if manifest.get("rng") is not None:
            rng_state = decode_rng_state(manifest["rng"], sess.rng.bit_generator.state)
        differences = environment_differences(manifest.get("environment"))
        if differences:
            warnings.warn(f"checkpoint {path} was saved under a different numpy/BLAS setup; "
                          "results may differ in the last bits: " + "; ".join(differences),
                          CheckpointWarning, stacklevel=2)
        for name in wanted:
            sess.assign(name, arrays[name])  # in place: compiled plans hold these arrays
        if rng_state is not None:
            sess.rng.bit_generator.state = rng_state  # same Generator object, new state
        if not known and self.var_list is None:
            sess.restored_from = path
        return manifest["global_step"]

    def _differences(self, sess, arrays: dict, known: dict, wanted: Iterable[str]) -> list[str]:
        """Every way the session's variables and the checkpoint's arrays disagree."""
        problems = []
        if known:
            expected = {n: known.get(n) for n in wanted} if self.var_list is not None \
                else dict(known)
        else:
            expected = {n: None for n in wanted}
        for name, node in expected.items():
            array = arrays.get(name)
            if array is None:
                shape = "" if node is None else f" {format_shape(node.shape)}"
                problems.append(f"variable '{name}'{shape} is not in the checkpoint")
                continue
            if node is not None and array.shape != node.shape:
                problems.append(f"variable '{name}' has shape {format_shape(node.shape)} in "
                                f"the graph but {format_shape(array.shape)} in the checkpoint")
            kind = array.dtype.kind if node is None else node.dtype.kind
            dtype = sess.float_dtype if kind == "f" else (array.dtype if node is None
                                                          else node.dtype)
            if array.dtype != dtype:
                problems.append(f"variable '{name}' is {dtype.name} in this session but "
                                f"{array.dtype.name} in the checkpoint")
        if self.var_list is None:
            for name, array in arrays.items():
                if name not in expected:
                    problems.append(f"checkpoint variable '{name}' "
                                    f"{format_shape(array.shape)} is not in the graph")
        return problems
