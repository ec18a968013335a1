"""The environment bit-exact results depend on: numpy, its BLAS, CPU features, threads.

A checkpoint's manifest records it; restoring under another one warns, naming each setting
that differs, because results may then differ in the last bits.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

import numpy as np

# Settings that change which BLAS kernel runs or how many threads split the work.
BLAS_SETTINGS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "OPENBLAS_CORETYPE")


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


def environment_differences(saved: dict | None) -> list[str]:
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
