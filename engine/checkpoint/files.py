"""One checkpoint's files: ``<path>.npz`` (the arrays) and ``<path>.json`` (the manifest),
how the manifest is made and sealed, and how both are read and verified."""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np

from engine.checkpoint.environment import environment
from engine.checkpoint.errors import CheckpointError
from engine.checkpoint.npzio import read_npz

FORMAT = "gradsweep.checkpoint"
VERSION = 1


def checkpoint_path(path: str | os.PathLike) -> str:
    """The checkpoint's path without extension (``dir/ckpt-100``); ``.npz``/``.json`` dropped."""
    path = os.fspath(path)
    for ext in (".npz", ".json"):
        if path.endswith(ext):
            return path[:-len(ext)]
    return path


def checkpoint_files(path: str) -> tuple[str, str]:
    """The data file and the manifest of checkpoint ``path`` (without extension)."""
    return path + ".npz", path + ".json"


# -- manifests


def _manifest_digest(body: dict) -> str:
    body = {k: v for k, v in body.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _seal(manifest: dict) -> dict:
    """The manifest with its own checksum (a flipped byte in it is caught, not trusted)."""
    sealed = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    sealed["manifest_sha256"] = _manifest_digest(sealed)
    return sealed


def new_manifest(name: str, global_step: int | None, size: int, sha256: str,
                 arrays: dict[str, np.ndarray], rng: dict | None) -> dict:
    """The sealed manifest of checkpoint ``name`` (its file name without extension), whose
    data file of ``size`` bytes and ``sha256`` holds ``arrays``; ``rng`` is the encoded
    random state (see ``rng_state``). Wall time and environment are taken now."""
    return _seal({
        "format": FORMAT, "version": VERSION, "global_step": global_step,
        "wall_time": time.time(), "data_file": name + ".npz", "size": size,
        "sha256": sha256,
        "variables": [{"name": k, "shape": list(a.shape), "dtype": a.dtype.name}
                      for k, a in arrays.items()],
        "rng": rng, "environment": environment(),
    })


# -- reading and verifying


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


def _read_verified(path: str, sha256: str | None = None) -> tuple[dict, bytes]:
    """The manifest and the data file's bytes, after checking size and sha256 (with
    ``sha256``, the digest the caller verified earlier, the data is not hashed again: it
    must be the manifest's)."""
    path = checkpoint_path(path)
    manifest = _read_manifest(path)
    data_file = path + ".npz"
    data = _read_bytes(data_file, "data file")
    if len(data) != manifest["size"]:
        raise CheckpointError(f"checkpoint data file {data_file} is damaged: {len(data)} bytes, "
                              f"its manifest says {manifest['size']} (truncated?)")
    if sha256 is not None and sha256 == manifest["sha256"]:
        return manifest, data
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


def read_checkpoint(path: str | os.PathLike, sha256: str | None = None
                    ) -> tuple[dict[str, np.ndarray], dict]:
    """The verified arrays (read-only, by variable name) and manifest of checkpoint ``path``
    (``sha256``: the data's digest as the caller verified it earlier, see
    ``Saver.restore``)."""
    path = checkpoint_path(path)
    manifest, data = _read_verified(path, sha256)
    data_file = path + ".npz"
    arrays = read_npz(data, data_file)
    listed = {v["name"]: (tuple(v["shape"]), v["dtype"]) for v in manifest["variables"]}
    found = {name: (a.shape, a.dtype.name) for name, a in arrays.items()}
    if listed != found:
        raise CheckpointError(f"checkpoint data file {data_file} does not hold what its "
                              f"manifest lists: {sorted(found.items())} vs "
                              f"{sorted(listed.items())}")
    return arrays, manifest
