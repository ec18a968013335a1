"""The one rule for names that become folder names (a sweep's name, a trial's id)."""

from __future__ import annotations

MAX_NAME_BYTES = 100        # a sweep's name: file systems allow 255 bytes, room to spare
MAX_FOLDER_BYTES = 255      # any folder name (a trial id is at most 120 characters)


def check_folder_name(name: str, what: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``name`` if it can be one folder's name: non-empty, no '/', '\\', '..' or NUL, not
    hidden (a leading '.'), at most ``max_bytes``; ValueError naming ``what`` otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty string")
    if "/" in name or "\\" in name or "\x00" in name or ".." in name or name == ".":
        raise ValueError(f"{what} {name!r} must not contain '/', '\\', '..' or NUL")
    if name.startswith("."):
        raise ValueError(f"{what} {name!r} must not start with '.'")
    if len(name.encode()) > max_bytes:
        raise ValueError(f"{what} {name[:20]!r}... is {len(name.encode())} bytes long; at most "
                         f"{max_bytes}")
    return name
