"""Which checkpoint an attempt continues from, verified once.

The driver fixes an attempt's restore point before it starts (DESIGN: "the restore step is
fixed when an attempt starts") and sends it as a :class:`CheckpointRef`: the checkpoint's
path, global step, sha256 and its data file's size and modification time when its digest
was last established — by the worker that wrote it (hashed as it was written) or by a full
verification. Only a checkpoint whose data file changed since is read and hashed again, so
a resumed trial reads its checkpoint's data once: when it loads it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from service.messages import CheckpointRef


def saved_ref(path: str | os.PathLike, sweep_dir: str | os.PathLike) -> CheckpointRef:
    """The ref of a checkpoint this process just wrote (its manifest holds the digest of the
    bytes written; its data file's stat is taken now)."""
    from engine.checkpoint import read_manifest

    path = os.fspath(path)
    manifest = read_manifest(path)
    st = os.stat(path + ".npz")
    return CheckpointRef(os.path.relpath(path, sweep_dir), int(manifest["global_step"] or 0),
                         manifest["sha256"], st.st_size, st.st_mtime_ns)


def unchanged(ref: CheckpointRef, sweep_dir: str | os.PathLike) -> bool:
    """True when the ref's data file still has the size and time it had when verified."""
    try:
        st = os.stat(os.path.join(sweep_dir, ref.path) + ".npz")
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (ref.size, ref.mtime_ns)


def restore_point(sweep_dir: str | os.PathLike, folder: Path, known: CheckpointRef | None,
                  note: Callable[[str], None] | None = None) -> CheckpointRef | None:
    """The checkpoint an attempt of the trial whose checkpoints are in ``folder`` continues
    from: the latest one that verifies, or None.

    ``known`` is what the driver last heard of (from the worker that wrote it): when it is
    still the latest and unchanged on storage, it is taken without reading its data. Else the
    latest checkpoint is verified in full; a damaged one is skipped with a warning, or with
    a call of ``note`` with the warning's message when given."""
    from engine.checkpoint import CheckpointWarning, checkpoint_candidates, latest_checkpoint

    candidates = checkpoint_candidates(folder) if folder.is_dir() else []
    if not candidates:
        return None
    if known is not None and os.path.join(sweep_dir, known.path) == candidates[0] and \
            unchanged(known, sweep_dir):
        return known
    with warnings.catch_warnings(record=note is not None) as skipped:
        if note is not None:
            warnings.simplefilter("always", CheckpointWarning)
        path = latest_checkpoint(folder)   # verifies the data: one full read
    for warning in skipped or ():
        if issubclass(warning.category, CheckpointWarning):
            note(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    return None if path is None else saved_ref(path, sweep_dir)


def load_restore_point(sess, sweep_dir: str | os.PathLike, ref: CheckpointRef,
                       folder: Path) -> CheckpointRef | None:
    """Load ``ref`` into ``sess`` and return the ref loaded: ``ref`` itself, read without
    hashing when its data file is unchanged; verified while it loads otherwise; and when it
    turns out damaged, the latest checkpoint that verifies (warned), or None."""
    from engine.checkpoint import CheckpointError
    from engine.saver import Saver

    path = os.path.join(sweep_dir, ref.path)
    try:
        Saver().restore(sess, path, sha256=ref.sha256 if unchanged(ref, sweep_dir) else None)
        return ref
    except CheckpointError as err:
        from engine.checkpoint import CheckpointWarning
        warnings.warn(f"skipping checkpoint {path}: {err}", CheckpointWarning, stacklevel=2)
    fallback = restore_point(sweep_dir, folder, None)
    if fallback is None:
        return None
    Saver().restore(sess, os.path.join(sweep_dir, fallback.path))
    return fallback
