"""A numpy bit generator's state as JSON, without pickle: its integers (the 128-bit ones of
PCG64 too) as decimal strings, read back following the structure of the live generator's
state so that every entry gets its proper type and nothing unexpected passes."""

from __future__ import annotations

import re

import numpy as np

from engine.checkpoint.errors import CheckpointError


def encode_rng_state(value):
    """A bit generator's state as JSON: integers (128-bit ones too) as decimal strings."""
    if isinstance(value, dict):
        return {str(k): encode_rng_state(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [str(int(v)) for v in value.ravel()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, str):
        return value
    raise CheckpointError(f"cannot store random state entry of type {type(value).__name__}")


def decode_rng_state(saved, template, where: str = "state"):
    """Rebuild a state from ``saved`` following the structure of ``template`` (the current
    generator's state), so every entry gets its proper type and nothing unexpected passes."""
    if isinstance(template, dict):
        if not isinstance(saved, dict) or set(saved) != set(template):
            raise CheckpointError(f"random {where}: expected keys {sorted(template)}, got "
                                  f"{sorted(saved) if isinstance(saved, dict) else saved!r}")
        return {k: decode_rng_state(saved[k], template[k], f"{where}.{k}") for k in template}
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
