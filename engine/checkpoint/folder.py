"""A folder of checkpoints: its JSON state file ``checkpoint`` (``{"latest": ..., "kept":
[...oldest first], "preserved": [...]}``, names relative to the folder), the complete
checkpoints on disk, and the latest one that verifies."""

from __future__ import annotations

import json
import os
import warnings

from engine.checkpoint.errors import CheckpointError, CheckpointWarning
from engine.checkpoint.files import verify_checkpoint

STATE_FILE = "checkpoint"
STATE_VERSION = 1


def read_state(folder: str) -> dict | None:
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


def wall_time(path: str) -> float:
    """When checkpoint ``path`` was saved (the manifest's time; the file's if unreadable)."""
    try:
        with open(path + ".json", "rb") as f:
            return float(json.loads(f.read())["wall_time"])
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return os.path.getmtime(path + ".json")
        except OSError:
            return float("-inf")


def names_on_disk(folder: str) -> list[str]:
    """Checkpoint names in ``folder`` that have both a manifest and a data file."""
    try:
        entries = set(os.listdir(folder))
    except FileNotFoundError:
        return []
    return [e[:-5] for e in entries
            if e.endswith(".json") and not e.startswith(".") and e[:-5] + ".npz" in entries]


def checkpoint_candidates(folder: str | os.PathLike) -> list[str]:
    """The checkpoints of ``folder`` (paths without extension), newest first, not verified:
    those the state file names (latest first, then the other kept ones, newest first), then
    any other complete checkpoint in the folder, newest first."""
    folder = os.fspath(folder)
    state = read_state(folder) or {}
    named = [state.get("latest")] + list(reversed(state.get("kept", []))) + \
        list(reversed(state.get("preserved", [])))
    candidates = list(dict.fromkeys(n for n in named if isinstance(n, str) and n))
    others = set(names_on_disk(folder)) - set(candidates)
    candidates += sorted(others, key=lambda n: wall_time(os.path.join(folder, n)),
                         reverse=True)
    return [os.path.join(folder, name) for name in candidates]


def latest_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest checkpoint in ``folder`` whose files exist and verify, or None.

    Candidates are :func:`checkpoint_candidates`. A damaged or missing candidate is skipped
    with a :class:`CheckpointWarning` naming the file.
    """
    for path in checkpoint_candidates(folder):
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint {path}: {e}", CheckpointWarning, stacklevel=2)
            continue
        return path
    return None
