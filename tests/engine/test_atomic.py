"""Durable files: a file is replaced whole or not at all, and no temporary file is left."""

import os

import pytest

from engine import atomic
from engine.atomic import atomic_write_bytes


def test_atomic_write_bytes_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_bytes(path, b"old")
    atomic_write_bytes(str(path), b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path,
                                                                         monkeypatch):
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(b"old")
    temporary = []

    def failing_replace(src, dst):
        temporary.append(os.path.basename(src))
        raise OSError("no space left")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="no space"):
        atomic_write_bytes(path, b"new", stem="events.out.tfev.1")
    # The temporary name starts with the stem given, hidden, and is gone after the failure.
    assert temporary[0].startswith(".events.out.tfev.1.") and temporary[0].endswith(".tmp")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == [path.name]
