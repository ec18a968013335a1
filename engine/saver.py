"""Checkpoints: a Saver with bit-exact resume, atomic files and integrity checks.

A checkpoint ``<prefix>-<global_step>`` is two files in one folder:

- ``<name>.npz``: one array per variable (model variables, optimizer slots and step
  counters), written uncompressed with ``allow_pickle=False``;
- ``<name>.json``: the manifest: names, shapes and dtypes, ``global_step``, wall time, the
  sha256 and size of the ``.npz``, the session's random generator state (its 128-bit
  integers as decimal strings), the numpy/BLAS build and thread settings in use, and a
  sha256 of the manifest itself.

A JSON state file ``checkpoint`` in the folder names the latest checkpoint and the kept
ones (``{"latest": ..., "kept": [...oldest first]}``, names relative to the folder so the
folder can be mounted anywhere). Every file is written under a temporary name, flushed,
fsynced and renamed, and the folder fsynced; the state file is replaced last, so a crash
at any moment leaves it naming complete checkpoints. Loading never unpickles: arrays are
read straight from the verified bytes and object arrays are refused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import operator
import os
import platform
import re
import struct
import time
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

import numpy as np

from engine.atomic import BackgroundFsync, TempFile, fsync_dir, publish
from engine.graph import GraphError, Variable, format_shape

FORMAT = "gradsweep.checkpoint"
VERSION = 1
STATE_FILE = "checkpoint"
STATE_VERSION = 1
# Settings that change which BLAS kernel runs or how many threads split the work.
BLAS_SETTINGS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "OPENBLAS_CORETYPE")
NUMERIC_KINDS = "biuf"
STEP_SUFFIX = r"(-\d+)?"


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, unsafe or unreadable; names the file."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped, or one is restored under a different numpy/BLAS."""


# -- paths


def checkpoint_path(path: str | os.PathLike) -> str:
    """The checkpoint's path without extension (``dir/ckpt-100``); ``.npz``/``.json`` dropped."""
    path = os.fspath(path)
    for ext in (".npz", ".json"):
        if path.endswith(ext):
            return path[:-len(ext)]
    return path


def _files(path: str) -> tuple[str, str]:
    return path + ".npz", path + ".json"


# -- the environment results depend on


@functools.lru_cache(maxsize=1)
def _numpy_build() -> dict:
    """numpy's version, BLAS build and the CPU features it dispatches to (once per process).

    Reads ``numpy.show_config(mode="dicts")`` (numpy >= 1.26 / 2.x) and tolerates anything
    missing: a checkpoint must never fail because build information is unavailable.
    """
    info: dict[str, Any] = {"numpy": np.__version__, "machine": platform.machine(),
                            "blas": "unknown", "cpu_features": "unknown"}
    try:
        config = np.show_config(mode="dicts")
    except Exception:  # older numpy prints instead of returning a dict
        config = getattr(getattr(np, "__config__", None), "CONFIG", None)
    try:
        blas = config["Build Dependencies"]["blas"]
        parts = [str(blas.get("name", "")), str(blas.get("version", ""))]
        detail = blas.get("openblas configuration")
        if detail:
            parts.append(f"({' '.join(str(detail).split())})")
        info["blas"] = " ".join(p for p in parts if p)
    except Exception:
        pass
    try:
        found = config["SIMD Extensions"]["found"]
        info["cpu_features"] = " ".join(str(f) for f in found)
    except Exception:
        pass
    return info


def environment() -> dict:
    """What bit-exact results depend on: numpy, its BLAS, CPU features, thread settings."""
    env = dict(_numpy_build())
    try:
        env["cpus"] = len(os.sched_getaffinity(0))  # BLAS's default thread count
    except (AttributeError, OSError):
        env["cpus"] = os.cpu_count()
    env["settings"] = {k: os.environ.get(k) for k in BLAS_SETTINGS}
    return env


def _environment_differences(saved: dict | None) -> list[str]:
    """``"key: saved X, now Y"`` for every setting that differs from this process's."""
    if not isinstance(saved, dict):
        return ["no build information was recorded"]

    def flat(env: dict) -> dict:
        settings = env.get("settings")
        return {**{k: env.get(k) for k in ("numpy", "blas", "cpu_features", "machine", "cpus")},
                **{k: settings.get(k) if isinstance(settings, dict) else None
                   for k in BLAS_SETTINGS}}

    then, now = flat(saved), flat(environment())
    return [f"{key}: saved {then[key]!r}, now {now[key]!r}" for key in now
            if then[key] != now[key]]


# -- the random generator's state, as JSON without pickle


def _encode_state(value):
    """A bit generator's state as JSON: integers (128-bit ones too) as decimal strings."""
    if isinstance(value, dict):
        return {str(k): _encode_state(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [str(int(v)) for v in value.ravel()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, str):
        return value
    raise CheckpointError(f"cannot store random state entry of type {type(value).__name__}")


def _decode_state(saved, template, where: str = "state"):
    """Rebuild a state from ``saved`` following the structure of ``template`` (the current
    generator's state), so every entry gets its proper type and nothing unexpected passes."""
    if isinstance(template, dict):
        if not isinstance(saved, dict) or set(saved) != set(template):
            raise CheckpointError(f"random {where}: expected keys {sorted(template)}, got "
                                  f"{sorted(saved) if isinstance(saved, dict) else saved!r}")
        return {k: _decode_state(saved[k], template[k], f"{where}.{k}") for k in template}
    if isinstance(template, np.ndarray):
        if not isinstance(saved, list) or len(saved) != template.size:
            raise CheckpointError(f"random {where}: expected {template.size} integers")
        return np.array([int(v) for v in saved], dtype=template.dtype).reshape(template.shape)
    if isinstance(template, (bool, np.bool_)):
        return bool(saved)
    if isinstance(template, (int, np.integer)):
        if not isinstance(saved, str) or not re.fullmatch(r"-?\d+", saved):
            raise CheckpointError(f"random {where}: expected a decimal integer, got {saved!r}")
        return int(saved)
    if isinstance(template, str):
        if saved != template:
            raise CheckpointError(f"random {where}: the checkpoint's generator is {saved!r}, "
                                  f"the session's is {template!r}")
        return saved
    raise CheckpointError(f"random {where}: unsupported entry {type(template).__name__}")


# -- manifests


def _json_temp(path: str, obj) -> TempFile:
    temp = TempFile(path)
    temp.file.write((json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    return temp


def _manifest_digest(body: dict) -> str:
    body = {k: v for k, v in body.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _seal(manifest: dict) -> dict:
    """The manifest with its own checksum (a flipped byte in it is caught, not trusted)."""
    sealed = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    sealed["manifest_sha256"] = _manifest_digest(sealed)
    return sealed


def _read_bytes(file: str, what: str) -> bytes:
    """The contents of ``file``, the checkpoint's ``what``; CheckpointError if it is missing."""
    try:
        with open(file, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {what} {file} does not exist") from None


def _read_manifest(path: str) -> dict:
    """The verified manifest of checkpoint ``path`` (without extension)."""
    manifest_file = path + ".json"
    raw = _read_bytes(manifest_file, "manifest")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint manifest {manifest_file} is damaged: not valid "
                              f"JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{manifest_file} is not a gradsweep checkpoint manifest")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise CheckpointError(f"checkpoint manifest {manifest_file} is damaged: its checksum "
                              "does not match its content")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"checkpoint manifest {manifest_file} has format version "
                              f"{manifest.get('version')!r}; this engine reads version {VERSION}")
    return manifest


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of checkpoint ``path`` (``global_step``, ``wall_time``, ``variables``...)
    with its own checksum checked, without reading the data file (see
    :func:`verify_checkpoint`)."""
    return _read_manifest(checkpoint_path(os.fspath(path)))


def _read_verified(path: str) -> tuple[dict, bytes]:
    """The manifest and the data file's bytes, after checking size and sha256."""
    path = checkpoint_path(path)
    manifest = _read_manifest(path)
    data_file = path + ".npz"
    data = _read_bytes(data_file, "data file")
    if len(data) != manifest["size"]:
        raise CheckpointError(f"checkpoint data file {data_file} is damaged: {len(data)} bytes, "
                              f"its manifest says {manifest['size']} (truncated?)")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        raise CheckpointError(f"checkpoint data file {data_file} is damaged: sha256 {digest} "
                              f"does not match its manifest's {manifest['sha256']}")
    return manifest, data


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """Check checkpoint ``path`` (``dir/ckpt-100``, with or without extension) without a
    session: the manifest's own checksum and the data file's size and sha256.

    Returns the manifest (``global_step``, ``wall_time``, ``variables``...); raises
    :class:`CheckpointError` naming the file at fault.
    """
    return _read_verified(os.fspath(path))[0]


# -- the npz format, written and read without pickle


class _HashingWriter:
    """Passes writes on to a file and hashes them. It tells its position but cannot seek,
    so zipfile streams every member once (sizes in data descriptors) and the hash is the
    file's, with no second read and no file-sized buffer in memory."""

    def __init__(self, f: BinaryIO):
        self._f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        written = self._f.write(data)
        self.size += written
        return written

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()


def _write_npz(f: BinaryIO, arrays: dict[str, np.ndarray]) -> tuple[int, str]:
    """Write an uncompressed ``.npz`` of ``arrays`` (what ``np.savez`` writes, never
    pickling) to ``f``; returns its size and sha256."""
    out = _HashingWriter(f)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return out.size, out.sha256.hexdigest()


def _npz_arrays(data: bytes, data_file: str) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed ``.npz`` as read-only views of ``data``.

    Every ``.npy`` header is read before any data: a member holding objects (which numpy
    would unpickle), or anything but booleans, integers and floats, is refused.
    """
    if not data.startswith(b"PK"):
        raise CheckpointError(f"checkpoint data file {data_file} is not an .npz (zip) file")
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"checkpoint data file {data_file} is not a readable .npz: {e}") \
            from None
    arrays = {}
    for info in members:
        where = f"'{info.filename}' in {data_file}"
        if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"checkpoint data file {data_file}: member {where} is not an "
                                  "uncompressed .npy array")
        start = info.header_offset
        if data[start:start + 4] != b"PK\x03\x04":
            raise CheckpointError(f"checkpoint data file {data_file}: bad zip entry {where}")
        name_len, extra_len = struct.unpack("<HH", data[start + 26:start + 30])
        start += 30 + name_len + extra_len
        end = start + info.file_size
        header = io.BytesIO(data[start:min(end, start + 65536 + 16)])
        try:
            version = np.lib.format.read_magic(header)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read_header(header)
        except ValueError as e:
            raise CheckpointError(f"checkpoint data file {data_file}: unreadable array header "
                                  f"for {where}: {e}") from None
        if dtype.hasobject or dtype.kind not in NUMERIC_KINDS or dtype.fields is not None:
            raise CheckpointError(f"checkpoint data file {data_file} holds a {dtype} array "
                                  f"{where}; checkpoints hold only numeric arrays and are never "
                                  "unpickled")
        count = int(np.prod(shape, dtype=np.int64))
        offset = start + header.tell()
        if offset + count * dtype.itemsize != end:
            raise CheckpointError(f"checkpoint data file {data_file}: array {where} has the "
                                  f"wrong number of bytes for shape {shape}")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        arrays[info.filename[:-4]] = np.reshape(array, shape, order="F" if fortran else "C")
    return arrays


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The verified arrays (read-only, by variable name) and manifest of checkpoint ``path``."""
    path = checkpoint_path(path)
    manifest, data = _read_verified(path)
    data_file = path + ".npz"
    arrays = _npz_arrays(data, data_file)
    listed = {v["name"]: (tuple(v["shape"]), v["dtype"]) for v in manifest["variables"]}
    found = {name: (a.shape, a.dtype.name) for name, a in arrays.items()}
    if listed != found:
        raise CheckpointError(f"checkpoint data file {data_file} does not hold what its "
                              f"manifest lists: {sorted(found.items())} vs "
                              f"{sorted(listed.items())}")
    return arrays, manifest


# -- the folder: state file and listing


def _read_state(folder: str) -> dict | None:
    """The folder's state file, or None when it is missing (warning when it is damaged)."""
    state_file = os.path.join(folder, STATE_FILE)
    try:
        with open(state_file, "rb") as f:
            state = json.loads(f.read().decode("utf-8"))
        if not isinstance(state, dict) or not all(
                isinstance(state.get(key, []), list) for key in ("kept", "preserved")):
            raise ValueError("not a checkpoint state")
        return state
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as e:
        warnings.warn(f"checkpoint state file {state_file} is damaged ({e}); using the "
                      "checkpoints found in the folder", CheckpointWarning, stacklevel=3)
        return None


def _wall_time(path: str) -> float:
    """When checkpoint ``path`` was saved (the manifest's time; the file's if unreadable)."""
    try:
        with open(path + ".json", "rb") as f:
            return float(json.loads(f.read())["wall_time"])
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return os.path.getmtime(path + ".json")
        except OSError:
            return float("-inf")


def _names_on_disk(folder: str) -> list[str]:
    """Checkpoint names in ``folder`` that have both a manifest and a data file."""
    try:
        entries = set(os.listdir(folder))
    except FileNotFoundError:
        return []
    return [e[:-5] for e in entries
            if e.endswith(".json") and not e.startswith(".") and e[:-5] + ".npz" in entries]


def latest_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest checkpoint in ``folder`` whose files exist and verify, or None.

    Candidates come from the state file (latest first, then the other kept ones, newest
    first), then any other complete checkpoint in the folder, newest first. A damaged or
    missing candidate is skipped with a :class:`CheckpointWarning` naming the file.
    """
    folder = os.fspath(folder)
    state = _read_state(folder) or {}
    named = [state.get("latest")] + list(reversed(state.get("kept", []))) + \
        list(reversed(state.get("preserved", [])))
    candidates = list(dict.fromkeys(n for n in named if isinstance(n, str) and n))
    others = set(_names_on_disk(folder)) - set(candidates)
    candidates += sorted(others, key=lambda n: _wall_time(os.path.join(folder, n)),
                         reverse=True)
    for name in candidates:
        path = os.path.join(folder, name)
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint {path}: {e}", CheckpointWarning, stacklevel=2)
            continue
        return path
    return None


# -- the Saver


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
        rng_state = _encode_state(sess.rng.bit_generator.state)
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
        data_file, manifest_file = _files(path)
        before = (list(self._kept), list(self._preserved), self._last_preserved)
        temps: list[TempFile] = []
        syncing = None
        try:
            temps.append(TempFile(data_file))
            size, sha256 = _write_npz(temps[0].file, arrays)
            # The data file's fsync (the long one) runs while the small files are written;
            # concurrent fsyncs also share the filesystem's journal commits.
            syncing = BackgroundFsync(temps[0])
            temps.append(_json_temp(manifest_file, _seal({
                "format": FORMAT, "version": VERSION, "global_step": global_step,
                "wall_time": time.time(), "data_file": name + ".npz", "size": size,
                "sha256": sha256,
                "variables": [{"name": k, "shape": list(a.shape), "dtype": a.dtype.name}
                              for k, a in arrays.items()],
                "rng": rng_state, "environment": environment(),
            })))
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
        state = _read_state(folder) or {}
        named = [n for n in state.get("kept", []) if isinstance(n, str)]
        self._preserved = [n for n in state.get("preserved", [])
                           if isinstance(n, str) and self._pattern.fullmatch(n)]
        try:
            self._last_preserved = float(state["last_preserved_time"])
        except (KeyError, TypeError, ValueError):
            self._last_preserved = time.time()
        own = {n for n in named + _names_on_disk(folder) if self._pattern.fullmatch(n)}
        own -= set(self._preserved)
        self._kept = sorted(own, key=lambda n: (_wall_time(os.path.join(folder, n)), n))
        self._folder = folder

    def _apply_retention(self) -> list[str]:
        """Drop the oldest checkpoints beyond ``max_to_keep``; return those to delete."""
        dropped = []
        while self.max_to_keep is not None and len(self._kept) > self.max_to_keep:
            old = self._kept.pop(0)
            saved_at = _wall_time(os.path.join(self._folder, old))
            if self.keep_every_n_hours is not None and \
                    saved_at >= self._last_preserved + self.keep_every_n_hours * 3600:
                self._preserved.append(old)
                self._last_preserved = saved_at
            else:
                dropped.append(old)
        return dropped

    def _state(self) -> dict:
        """The state file's new content: this prefix's entries after other prefixes'."""
        current = _read_state(self._folder) or {}

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
        for file in reversed(_files(os.path.join(self._folder, name))):
            try:
                os.unlink(file)
            except FileNotFoundError:
                pass

    # -- restoring
    def restore(self, sess, path: str | os.PathLike | None) -> int | None:
        """Load checkpoint ``path`` into ``sess``: every variable in place, and the random
        state. Returns the checkpoint's ``global_step`` (the next step to run), or None if it
        was saved without one; :func:`verify_checkpoint` gives the whole manifest.

        The sha256 is verified first. If the session already knows its variables (the graph
        was run or attached) they must match the checkpoint exactly: one error lists every
        missing, unexpected, mis-shaped and mis-typed variable. Otherwise every array is
        loaded and the session checks later graphs against it (``sess.restored_from``).
        """
        if path is None:
            raise CheckpointError("Saver.restore: no checkpoint path (latest_checkpoint found "
                                  "none?)")
        path = checkpoint_path(path)
        arrays, manifest = read_checkpoint(path)
        known = sess.variable_nodes()
        wanted = list(arrays) if self.var_list is None else self._var_names(sess)
        problems = self._differences(sess, arrays, known, wanted)
        if problems:
            raise GraphError(f"the graph does not match checkpoint {path}:\n  "
                             + "\n  ".join(problems))
        rng_state = None
        if manifest.get("rng") is not None:
            rng_state = _decode_state(manifest["rng"], sess.rng.bit_generator.state)
        differences = _environment_differences(manifest.get("environment"))
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
