"""Variable initialisers: callables ``(rng, shape, dtype) -> array``.

Fans follow the dense kernel's ``(fan_in, fan_out)`` layout.
"""

from __future__ import annotations

import numpy as np


def zeros(rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
    return np.zeros(shape, dtype)


def ones(rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
    return np.ones(shape, dtype)


def _fans(shape: tuple) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    return int(np.prod(shape[:-1])), shape[-1]


def glorot_uniform(rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
    """Uniform in ``±sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio): for sigmoid, tanh, linear."""
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def he_normal(rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
    """Normal with standard deviation ``sqrt(2 / fan_in)`` (He et al.): for ReLU."""
    fan_in, _ = _fans(shape)
    return (rng.standard_normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def normal(stddev: float = 1.0):
    """Normal with the given standard deviation."""
    def init(rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
        return (rng.standard_normal(size=shape) * stddev).astype(dtype)
    return init


def uniform(low: float = -1.0, high: float = 1.0):
    """Uniform in ``[low, high)``."""
    def init(rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
        return rng.uniform(low, high, size=shape).astype(dtype)
    return init


BY_NAME = {"zeros": zeros, "ones": ones, "glorot_uniform": glorot_uniform,
           "he_normal": he_normal}


def get(initializer):
    """An initializer from a name, a callable, or an array (returned as is)."""
    if isinstance(initializer, str):
        try:
            return BY_NAME[initializer]
        except KeyError:
            raise ValueError(f"unknown initializer {initializer!r}; known: "
                             f"{', '.join(sorted(BY_NAME))}") from None
    return initializer
