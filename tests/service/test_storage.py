"""Storage: atomic files, the driver's lock, the trial table."""

import dataclasses
import errno
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from service.messages import Outcome, TrialState
from service.storage import (Attempt, LockHeld, StorageError, SweepLock, SweepState,
                             TrialRecord, atomic_write_json, check_storage, read_json)
from tests.service.helpers import atomic_files_full_after


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"a": 1})
    assert read_json(path, "state") == {"a": 1}
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic_write_json(path, {"a": 2})
    assert read_json(path, "state") == {"a": 2}
    assert len(synced) >= 2  # the file and its folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.parametrize("code, tolerated", [(errno.EINVAL, True), (errno.EIO, False)])
def test_folder_fsync_refused_by_the_filesystem(tmp_path, monkeypatch, code, tolerated):
    # Some shared filesystems cannot fsync a folder (EINVAL); their renames are durable
    # already, so writes go on. A real I/O error still stops the write.
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "state.json"
    if tolerated:
        atomic_write_json(path, {"a": 1})
        assert read_json(path, "state") == {"a": 1}
    else:
        with pytest.raises(OSError, match=os.strerror(code)):
            atomic_write_json(path, {"a": 1})


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"a": 1})

    atomic_files_full_after(monkeypatch, 0)
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(path, {"a": 2})
    monkeypatch.undo()
    assert read_json(path, "state") == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_read_json_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(StorageError, match="sweep state .*does not exist"):
        read_json(tmp_path / "x.json", "sweep state")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(StorageError, match="x.json.* is corrupt"):
        read_json(tmp_path / "x.json", "sweep state")


def test_storage_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(StorageError, match="is not a folder"):
        check_storage(tmp_path / "f")
    assert check_storage(tmp_path / "new" / "logs") == tmp_path / "new" / "logs"


HOLD = textwrap.dedent("""
    import sys, time
    from service.storage import SweepLock
    lock = SweepLock(sys.argv[1]); lock.acquire()
    print("held", flush=True)
    if sys.argv[2] == "die":
        import os; os._exit(0)
    time.sleep(60)
""")


def test_second_driver_is_refused_and_a_dead_holder_is_taken_over(tmp_path):
    lock_path = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_path), "hold"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=rf"pid {holder.pid} on host"):
            SweepLock(lock_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock; its record remains: taken over with a warning
    with pytest.warns(UserWarning, match=rf"no longer running \(pid {holder.pid}"):
        lock = SweepLock(lock_path)
        lock.acquire()
    assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    lock.release()
    assert lock_path.read_text() == ""  # a clean release leaves nothing to take over
    again = SweepLock(lock_path)
    again.acquire()          # taken again at once, without a warning
    again.release()


def test_state_round_trips_and_counts_failures():
    rec = TrialRecord(id="0_lr=0.1", index=0, config={"lr": 0.1}, state=TrialState.RUNNING,
                      attempts=[Attempt("a1", outcome=Outcome.ERROR),
                                Attempt("a2", outcome=Outcome.DRIVER_LOST),
                                Attempt("a3", outcome=Outcome.WORKER_DIED), Attempt("a4")])
    state = SweepState("s", "h", [rec])
    again = SweepState(**{**state.__dict__})
    assert SweepState("s", "h", [TrialRecord.from_dict(rec.to_dict())]).to_dict() == \
        again.to_dict()
    assert rec.failed_attempts == 2
    assert json.loads(json.dumps(state.to_dict()))["trials"][0]["state"] == "RUNNING"


def test_trial_record_to_dict_is_asdict_with_the_state_value():
    rec = TrialRecord(id="3_lr=0.1,net=a", index=3,
                      config={"lr": 0.1, "net": {"sizes": [4, 2], "act": "relu"}},
                      state=TrialState.STOPPED, reason="early-stop",
                      attempts=[Attempt("a1", "node-1", 41, 10.0, 12.5, Outcome.WORKER_DIED),
                                Attempt("a2", "node-2", 42, 13.0, None, None)],
                      last_step=7, last_metrics={"loss": 0.5, "val": {"acc": 0.75}},
                      best_metrics={"step": 5, "loss": 0.25}, checkpoint="3/checkpoints/ckpt-6")
    expected = dataclasses.asdict(rec)
    expected["state"] = "STOPPED"
    assert rec.to_dict() == expected
    # the same keys in the same order: state.json's bytes do not change
    assert json.dumps(rec.to_dict()) == json.dumps(expected)


def test_corrupt_state_is_named(tmp_path):
    (tmp_path / "state.json").write_text('{"sweep": "s"}')
    with pytest.raises(StorageError, match="state.json.* is corrupt"):
        SweepState.load(tmp_path / "state.json")
