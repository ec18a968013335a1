"""Checkpoints: exact resume across processes, crashes mid-save, damage, pickles, retention,
changed architectures. Process-level scenarios run tests/engine/checkpoint_worker.py."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import engine as en
from engine.checkpoint import CheckpointWarning, read_checkpoint, read_manifest, verify_checkpoint
from engine.checkpoint.files import _seal
from tests.engine.checkpoint_worker import SEED, build, run_steps

WORKER = Path(__file__).with_name("checkpoint_worker.py")
ROOT = Path(__file__).resolve().parents[2]
STEPS, RESUME_AT = 14, 9  # 6 batches per epoch: step 9 is in the middle of epoch 1


def start_worker(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, expect=(0,)) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in expect, f"worker exited {proc.returncode}:\n{out}\n{err}"


def run_worker(*args, expect=(0,)) -> None:
    finish(start_worker(*args), expect)


def load(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def on_disk(folder: Path) -> list[str]:
    """The complete checkpoints in ``folder`` (paths without extension), oldest first by
    the time their manifests say they were saved."""
    names = [e[:-5] for e in os.listdir(folder) if e.endswith(".json") and
             not e.startswith(".") and (folder / (e[:-5] + ".npz")).exists()]
    paths = [str(folder / name) for name in names]
    return sorted(paths, key=lambda p: (read_manifest(p)["wall_time"], p))


def differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not np.array_equal(a[k], b[k])]


def trained_session(opt="sgd", steps=1, **kw):
    model = build(opt, **kw)
    sess = en.Session(seed=SEED)
    run_steps(sess, model, 0, steps)
    return sess, model


# -- exact resume, every part in its own process


@pytest.mark.parametrize("opt,attach_first", [("sgd", False), ("adam", True)])
def test_resume_in_a_new_process_is_bit_exact_and_controls_differ(tmp_path, opt, attach_first):
    prefix = tmp_path / "ckpt"
    straight = start_worker("train", "--opt", opt, "--stop", STEPS, "--out", tmp_path / "s.npz")
    first = start_worker("train", "--opt", opt, "--stop", RESUME_AT, "--save", prefix,
                         "--out", tmp_path / "first.npz")
    finish(straight)
    finish(first)
    common = ["train", "--opt", opt, "--start", RESUME_AT, "--stop", STEPS,
              "--restore", f"{prefix}-{RESUME_AT}"] + (["--attach-first"] if attach_first else [])
    resumes = {kind: start_worker(*common, *(["--without", kind] if kind else []),
                                  "--out", tmp_path / f"resumed_{kind}.npz")
               for kind in ("", "rng", "slots")}
    for proc in resumes.values():
        finish(proc)

    expected = load(tmp_path / "s.npz")
    slots, step = {"sgd": (("/momentum",), "SGD/step"), "adam": (("/m", "/v"), "Adam/step")}[opt]
    assert any(k.endswith(slots) for k in expected) and expected[step] == STEPS
    assert differing(expected, load(tmp_path / "first.npz"))  # training went on after k
    assert differing(expected, load(tmp_path / "resumed_.npz")) == []
    # Negative controls: forgetting the random state (dropout masks) or the slots shows.
    assert differing(expected, load(tmp_path / "resumed_rng.npz"))
    assert differing(expected, load(tmp_path / "resumed_slots.npz"))


# -- crashes in the middle of a save


def assert_final_names_complete(folder: Path) -> None:
    for entry in os.listdir(folder):
        path = folder / entry
        if entry.startswith("."):
            continue  # temporary names
        if entry.endswith(".npz"):
            with zipfile.ZipFile(path) as zf:
                assert zf.testzip() is None
            load(path)
        elif entry.endswith(".json"):
            json.loads(path.read_text())
        else:
            assert entry == "checkpoint"
            state = json.loads(path.read_text())
            for name in state["kept"]:
                verify_checkpoint(folder / name)


@pytest.mark.parametrize("point", ["before-data-rename", "after-data-rename",
                                   "after-manifest-rename"])
def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, point):
    folder = tmp_path / "checkpoints"
    run_worker("crash", "--point", point, "--folder", folder, "--ref", tmp_path / "ref.npz",
               expect=(17, -9))
    entries = set(os.listdir(folder))
    # The child really died where it was told to.
    if point == "before-data-rename":
        assert "ckpt-3.npz" not in entries and any(e.startswith(".ckpt-3.npz") for e in entries)
    elif point == "after-data-rename":
        assert "ckpt-3.npz" in entries and "ckpt-3.json" not in entries
    else:
        assert {"ckpt-3.npz", "ckpt-3.json"} <= entries
        verify_checkpoint(folder / "ckpt-3")  # complete, but not yet named by the state
    assert json.loads((folder / "checkpoint").read_text())["latest"] == "ckpt-2"
    assert_final_names_complete(folder)

    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        latest = en.latest_checkpoint(folder)
    assert latest == str(folder / "ckpt-2")
    model = build("sgd")
    sess = en.Session(seed=SEED + 1)
    en.Saver().restore(sess, latest)
    assert differing(load(tmp_path / "ref.npz"), sess.variables()) == []
    # A saver in another process carries on in the same folder.
    run_steps(sess, model, 2, 3)
    path = en.Saver().save(sess, folder / "ckpt", global_step=3)
    assert en.latest_checkpoint(folder) == path
    verify_checkpoint(path)


# -- damage


def save_two(tmp_path):
    sess, model = trained_session(steps=1)
    saver = en.Saver()
    first = saver.save(sess, tmp_path / "ckpt", global_step=1)
    run_steps(sess, model, 1, 2)
    second = saver.save(sess, tmp_path / "ckpt", global_step=2)
    return sess, first, second


@pytest.mark.parametrize("damage", ["truncate", "flip", "flip-manifest"])
def test_damage_is_caught_by_checksum_and_latest_falls_back(tmp_path, damage):
    sess, first, second = save_two(tmp_path)
    data_file = Path(second + ".npz")
    blob = bytearray(data_file.read_bytes())
    if damage == "truncate":
        data_file.write_bytes(blob[:len(blob) // 2])
        culprit = data_file.name
    elif damage == "flip":
        at = blob.find(sess.variables()["hidden1/kernel"].tobytes()) + 5
        assert at > 5
        blob[at] ^= 0x01
        data_file.write_bytes(bytes(blob))
        culprit = data_file.name
        # The zip structure is intact: only the content changed.
        assert len(zipfile.ZipFile(data_file).namelist()) == len(sess.variables())
    else:
        manifest_file = Path(second + ".json")
        text = manifest_file.read_text()
        assert '"global_step": 2' in text
        manifest_file.write_text(text.replace('"global_step": 2', '"global_step": 7'))
        culprit = manifest_file.name

    with pytest.raises(en.CheckpointError, match=culprit):
        verify_checkpoint(second)
    with pytest.raises(en.CheckpointError, match=culprit):
        en.Saver().restore(en.Session(), second)
    with pytest.warns(CheckpointWarning, match=culprit):
        assert en.latest_checkpoint(tmp_path) == first
    # The manifest alone: its own damage is caught, the data file's is not looked for.
    if damage == "flip-manifest":
        with pytest.raises(en.CheckpointError, match=culprit):
            read_manifest(second)
    else:
        assert read_manifest(second)["global_step"] == 2


def test_latest_checkpoint_none_and_missing_files(tmp_path):
    assert en.latest_checkpoint(tmp_path / "nowhere") is None
    assert en.latest_checkpoint(tmp_path) is None
    _, first, second = save_two(tmp_path)
    os.unlink(second + ".npz")
    with pytest.warns(CheckpointWarning, match="ckpt-2.npz does not exist"):
        assert en.latest_checkpoint(tmp_path) == first
    os.unlink(first + ".json")
    with pytest.warns(CheckpointWarning):
        assert en.latest_checkpoint(tmp_path) is None
    with pytest.raises(en.CheckpointError, match="no checkpoint path"):
        en.Saver().restore(en.Session(), None)


def test_damaged_state_file_falls_back_to_the_folder(tmp_path):
    _, first, second = save_two(tmp_path)
    (tmp_path / "checkpoint").write_text('{"latest": "ckpt-2", "kept": [')
    with pytest.warns(CheckpointWarning, match="state file"):
        assert en.latest_checkpoint(tmp_path) == second
    assert on_disk(tmp_path) == [first, second]


# -- no code runs from a checkpoint


class CreatesFile:
    """Unpickling this creates ``path``: the payload a malicious checkpoint would carry."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def forge(path: str, data: bytes, variables: list[dict]) -> None:
    """Replace checkpoint ``path``'s data with ``data`` and re-seal its manifest to match,
    as an attacker who can write both files would."""
    Path(path + ".npz").write_bytes(data)
    manifest = json.loads(Path(path + ".json").read_text())
    manifest.update(size=len(data), sha256=hashlib.sha256(data).hexdigest(), variables=variables)
    Path(path + ".json").write_text(json.dumps(_seal(manifest)))


@pytest.mark.parametrize("container", ["npz", "raw-pickle"])
def test_pickled_payload_is_refused_without_running(tmp_path, container):
    _, _, second = save_two(tmp_path)
    control, target = tmp_path / "control-ran", tmp_path / "payload-ran"
    # The payload is live: numpy with allow_pickle=True would run it.
    np.save(tmp_path / "control.npy", np.array([CreatesFile(control)], dtype=object),
            allow_pickle=True)
    np.load(tmp_path / "control.npy", allow_pickle=True)
    assert control.exists()

    payload = np.array([CreatesFile(target)], dtype=object)
    if container == "npz":
        np.savez(tmp_path / "evil.npz", allow_pickle=True, **{"hidden0/kernel": payload})
        data = (tmp_path / "evil.npz").read_bytes()
        message = r"object array 'hidden0/kernel.npy'"
    else:
        data = pickle.dumps(payload)
        message = "not an .npz"
    forge(second, data, [{"name": "hidden0/kernel", "shape": [1], "dtype": "object"}])
    verify_checkpoint(second)  # the checksums match: only the loader stands in the way
    with pytest.raises(en.CheckpointError, match=message):
        en.Saver().restore(en.Session(), second)
    with pytest.raises(en.CheckpointError, match=message):
        read_checkpoint(second)
    assert not target.exists()


# -- retention


def test_retention_continues_across_two_processes(tmp_path):
    run_worker("save-many", "--folder", tmp_path, "--first", 1, "--last", 4, "--max-to-keep", 3)
    assert json.loads((tmp_path / "checkpoint").read_text())["kept"] == [
        "ckpt-2", "ckpt-3", "ckpt-4"]
    run_worker("save-many", "--folder", tmp_path, "--first", 5, "--last", 8, "--max-to-keep", 3)
    kept = ["ckpt-6", "ckpt-7", "ckpt-8"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"] + sorted(
        f"{n}{ext}" for n in kept for ext in (".json", ".npz"))
    state = json.loads((tmp_path / "checkpoint").read_text())
    assert state["kept"] == kept and state["latest"] == "ckpt-8"
    assert on_disk(tmp_path) == [str(tmp_path / n) for n in kept]


def test_keep_every_n_hours_survives_a_new_saver(tmp_path, monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    sess, _ = trained_session(steps=1)
    saver = en.Saver(max_to_keep=2, keep_every_n_hours=1)
    for step in range(10):
        clock[0] = 1_000_000.0 + 1500 * step  # a save every 25 minutes
        saver.save(sess, tmp_path / "ckpt", global_step=step)
    assert saver.last_checkpoints == [str(tmp_path / "ckpt-8"), str(tmp_path / "ckpt-9")]
    state = json.loads((tmp_path / "checkpoint").read_text())
    assert state["preserved"] == ["ckpt-3", "ckpt-6"]
    clock[0] += 1500
    en.Saver(max_to_keep=2, keep_every_n_hours=1).save(sess, tmp_path / "ckpt", global_step=10)
    assert [os.path.basename(p) for p in on_disk(tmp_path)] == [
        "ckpt-3", "ckpt-6", "ckpt-9", "ckpt-10"]


def test_resaving_a_kept_step_and_other_prefixes(tmp_path):
    sess, _ = trained_session(steps=1)
    saver = en.Saver(max_to_keep=2)
    for step in (1, 2, 3):
        saver.save(sess, tmp_path / "ckpt", global_step=step)
    best = en.Saver(max_to_keep=1).save(sess, tmp_path / "best")
    saver.save(sess, tmp_path / "ckpt", global_step=2)  # e.g. a resume from an earlier step
    state = json.loads((tmp_path / "checkpoint").read_text())
    assert state["latest"] == "ckpt-2" and state["kept"] == ["best", "ckpt-3", "ckpt-2"]
    assert sorted(os.path.basename(p) for p in on_disk(tmp_path)) == [
        "best", "ckpt-2", "ckpt-3"]
    verify_checkpoint(best)
    assert saver.last_checkpoints == [str(tmp_path / "ckpt-3"), str(tmp_path / "ckpt-2")]


# -- restoring into a graph


def test_restore_into_a_changed_architecture_lists_every_difference(tmp_path):
    sess, _ = trained_session("sgd", steps=1, hidden=(16, 16))
    path = en.Saver().save(sess, tmp_path / "ckpt", global_step=1)

    def changed_model():
        x = en.placeholder((None, 5), name="x")
        y = en.placeholder((None,), dtype=np.int64, name="y")
        h = en.layers.dense(x, 32, activation="relu", name="hidden0")
        h = en.layers.dense(h, 8, activation="relu", name="extra")
        loss = en.losses.softmax_cross_entropy(en.layers.dense(h, 3, name="out"), y)
        return x, y, en.optim.SGD(lr=0.1, momentum=0.9).minimize(loss)

    def with_slots(*names):
        return [*names, *(f"SGD/{n}/momentum" for n in names)]

    missing = with_slots("extra/kernel", "extra/bias")
    unexpected = with_slots("hidden1/kernel", "hidden1/bias")
    misshaped = with_slots("hidden0/kernel", "hidden0/bias", "out/kernel")

    # The graph is known before restoring: one error, nothing assigned.
    x, y, train = changed_model()
    known = en.Session(seed=SEED)
    known.attach(train)
    before = known.variables()
    with pytest.raises(en.GraphError) as info:
        en.Saver().restore(known, path)
    message = str(info.value)
    for name in missing:
        assert f"'{name}'" in message and "not in the checkpoint" in message
    for name in unexpected:
        assert f"checkpoint variable '{name}'" in message
    for name in misshaped:
        assert f"variable '{name}' has shape" in message
    assert message.count("\n") == len(missing) + len(unexpected) + len(misshaped)
    assert differing(before, known.variables()) == []

    # Restored before the graph is known (as the service does): the first run reports.
    fresh = en.Session(seed=SEED)
    en.Saver().restore(fresh, path)
    assert fresh.restored_from == path
    with pytest.raises(en.GraphError) as info:
        fresh.run(train, feed={x: np.zeros((4, 5), np.float32), y: np.zeros(4, np.int64)})
    message = str(info.value)
    for name in missing + misshaped:
        assert f"'{name}'" in message


def test_both_restore_paths_load_in_place_and_agree(tmp_path):
    sess, (x, y, loss, train) = trained_session("adam", steps=3)
    path = en.Saver().save(sess, tmp_path / "ckpt", global_step=3)
    saved = sess.variables()
    feed = {x: np.ones((4, 5), np.float32), y: np.arange(4) % 3}

    before_graph = en.Session(seed=SEED + 1)
    assert en.Saver().restore(before_graph, path) == 3
    assert before_graph.restored_from == path

    # A session that has compiled and run plans: restore must write into the very arrays
    # those plans hold, so the next run sees the checkpoint's values.
    ran = en.Session(seed=SEED + 2)
    ran.run([train, loss], feed=feed)
    stale = ran.run(loss, feed=feed)  # both plans are compiled before the restore
    en.Saver().restore(ran, path)
    assert ran.restored_from is None
    assert differing(saved, ran.variables()) == []
    assert differing(saved, before_graph.variables()) == []
    restored_loss = ran.run(loss, feed=feed)
    assert restored_loss == before_graph.run(loss, feed=feed) == sess.run(loss, feed)
    assert restored_loss != stale
    for session in (ran, before_graph, sess):
        session.run([train, loss], feed=feed)
    assert differing(sess.variables(), ran.variables()) == []
    assert differing(sess.variables(), before_graph.variables()) == []
    assert ran.rng.random() == before_graph.rng.random() == sess.rng.random()


def test_restore_refuses_another_float_dtype(tmp_path):
    sess, (_, _, _, train) = trained_session("sgd", steps=1)
    path = en.Saver().save(sess, tmp_path / "ckpt", global_step=1)
    wide = en.Session(seed=SEED, dtype=np.float64)
    wide.attach(train)
    with pytest.raises(en.GraphError, match="'out/kernel' is float64 in this session but "
                                            "float32 in the checkpoint"):
        en.Saver().restore(wide, path)


def test_var_list_saves_and_restores_a_subset(tmp_path):
    sess, (_, _, _, train) = trained_session("sgd", steps=2)
    kernels = ["hidden0/kernel", "out/kernel"]
    path = en.Saver(var_list=kernels).save(sess, tmp_path / "k", global_step=2)
    assert sorted(read_checkpoint(path)[0]) == sorted(kernels)
    other = en.Session(seed=SEED + 5)
    other.attach(train)
    untouched = other.variables()
    en.Saver(var_list=[other.variable_nodes()["out/kernel"], "hidden0/kernel"]).restore(
        other, path)
    assert sorted(differing(untouched, other.variables())) == sorted(kernels)
    with pytest.raises(en.GraphError, match=r"'hidden1/bias' \(16,\) is not in the checkpoint"):
        en.Saver(var_list=["hidden1/bias"]).restore(other, path)


# -- what a checkpoint holds


def test_manifest_describes_the_files_and_the_build(tmp_path):
    sess, _ = trained_session("adam", steps=2)
    path = en.Saver().save(sess, tmp_path / "ckpt", global_step=2)
    manifest = json.loads(Path(path + ".json").read_text())
    data = Path(path + ".npz").read_bytes()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["size"] == len(data) and manifest["global_step"] == 2
    assert abs(manifest["wall_time"] - time.time()) < 60
    values = sess.variables()
    assert {v["name"]: (tuple(v["shape"]), v["dtype"]) for v in manifest["variables"]} == {
        k: (a.shape, a.dtype.name) for k, a in values.items()}
    assert differing(load(path + ".npz"), values) == []  # plain numpy reads it
    env = manifest["environment"]
    assert env["numpy"] == np.__version__ and env["blas"] and env["cpus"] >= 1
    assert set(env["settings"]) >= {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}
    # The generator's 128-bit state survives as decimal strings (no pickle, no float).
    state = sess.rng.bit_generator.state
    assert manifest["rng"]["state"]["state"] == str(state["state"]["state"])


def test_restoring_under_another_build_warns(tmp_path):
    sess, _ = trained_session("sgd", steps=1)
    path = en.Saver().save(sess, tmp_path / "ckpt", global_step=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        en.Saver().restore(en.Session(), path)  # same machine, same build: silent
    manifest = json.loads(Path(path + ".json").read_text())
    manifest["environment"]["numpy"] = "1.0.0"
    manifest["environment"]["settings"]["OMP_NUM_THREADS"] = "7"
    Path(path + ".json").write_text(json.dumps(_seal(manifest)))
    expected = r"last bits.*numpy: saved '1.0.0'.*OMP_NUM_THREADS: saved '7', now"
    with pytest.warns(CheckpointWarning, match=expected):
        en.Saver().restore(en.Session(), path)


def test_bad_arguments_are_named(tmp_path):
    sess, _ = trained_session("sgd", steps=1)
    for step in (-1, True, 2.5, "3"):
        with pytest.raises(ValueError, match="global_step"):
            en.Saver().save(sess, tmp_path / "ckpt", global_step=step)
    with pytest.raises(ValueError, match="max_to_keep"):
        en.Saver(max_to_keep=-1)
    with pytest.raises(en.GraphError, match="no variables"):
        en.Saver().save(en.Session(), tmp_path / "ckpt")
    with pytest.raises(ValueError, match="names a folder"):
        en.Saver().save(sess, str(tmp_path) + os.sep)
    path = en.Saver().save(sess, tmp_path / "ckpt", global_step=np.int64(4))
    assert path.endswith("ckpt-4") and en.Saver().restore(en.Session(), path + ".npz") == 4
    unnumbered = en.Saver().save(sess, tmp_path / "final")
    assert unnumbered.endswith("final") and en.Saver().restore(en.Session(), unnumbered) is None
