"""Durable files: written under a temporary name beside the real one, fsynced, renamed into
place, and the folder fsynced, so that a crash leaves either the old file or the new one.

:func:`atomic_write_bytes` does it for one file. The Saver publishes several files in an
order (a checkpoint's files, then the state file naming them) with :class:`TempFile`,
:func:`publish` and :class:`BackgroundFsync`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import uuid
from collections.abc import Sequence


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make renames and new entries in ``folder`` durable."""
    fd = os.open(folder or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:
        # Some filesystems cannot fsync a directory; their renames are durable already.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


class TempFile:
    """A file written under a temporary name beside ``path``; ``publish`` renames it there.

    The temporary name is ``.<stem>.<pid>.<random>.tmp``, hidden and unique, ``stem`` being
    the file's name unless given: give another where something that scans the folder would
    take a name containing the file's for a real file.
    """

    def __init__(self, path: str | os.PathLike, stem: str | None = None):
        self.path = os.fspath(path)
        folder, name = os.path.split(self.path)
        unique = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.tmp = os.path.join(folder, f".{stem or name}.{unique}.tmp")
        self.file = open(self.tmp, "xb")

    def fsync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def publish(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Close and remove the temporary file (nothing left to do once published)."""
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


class BackgroundFsync:
    """Fsyncs a :class:`TempFile` in a thread, so that a long fsync overlaps other writes;
    ``join`` waits for it and re-raises what it raised."""

    def __init__(self, temp: TempFile):
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(temp,), daemon=True)
        self._thread.start()

    def _run(self, temp: TempFile) -> None:
        try:
            temp.fsync()
        except BaseException as e:  # handed to the caller's thread by join
            self._error = e

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def publish(folder: str, *groups: Sequence[TempFile]) -> None:
    """Rename groups of fsynced files into place one after another, each followed by an
    fsync of the folder: a later group (the state file) can only become visible after the
    earlier ones (the checkpoint) are durable under their final names."""
    for group in groups:
        for temp in group:
            temp.publish()
        fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, stem: str | None = None) -> None:
    """Replace ``path`` by a file holding ``data``: written to a temporary file in the same
    folder (named as :class:`TempFile` says, ``stem`` included), flushed and fsynced, renamed
    over ``path``, and the folder fsynced. A failure removes the temporary file."""
    temp = TempFile(path, stem)
    try:
        temp.file.write(data)
        temp.fsync()
        publish(os.path.dirname(temp.path), [temp])
    except BaseException:
        temp.discard()
        raise
