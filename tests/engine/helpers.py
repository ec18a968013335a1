"""Shared test helpers: the one gradient-check helper every op test uses, and input makers."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

import engine as en

GRAD_TOL = 1e-6


def away_from_zero(rng: np.random.Generator, shape, low: float = 0.1,
                   high: float = 2.0) -> np.ndarray:
    """float64 values with random signs and ``low <= |x| < high``: at least ``low`` away
    from the kinks at 0 (ReLU, leaky ReLU) and from division by zero."""
    magnitude = rng.uniform(low, high, size=shape)
    return np.where(rng.random(size=shape) < 0.5, -magnitude, magnitude)


def as_variables(arrays: Sequence[np.ndarray]) -> list[en.Variable]:
    """One float64 variable per array, named ``in0, in1, ...``."""
    return [en.Variable(np.asarray(a, dtype=np.float64), name=f"in{i}")
            for i, a in enumerate(arrays)]


def weighted_sum(node: en.Node, seed: int = 0) -> en.Node:
    """``sum(node * w)`` with fixed random weights ``w`` of magnitude 0.5..1.5, so that the
    op under test receives an uneven ``grad_output`` (a plain sum would hide mistakes that
    swap or average elements)."""
    w = away_from_zero(np.random.default_rng(seed), node.shape, 0.5, 1.5)
    return en.reduce_sum(node * en.constant(w))


def gradient_error(build: Callable[..., en.Node], inputs: Sequence[np.ndarray],
                   eps: float = 1e-5) -> float:
    """``check_gradients`` of ``weighted_sum(build(*variables))`` over every input.

    ``eps`` 1e-5 balances the central difference's truncation error (~eps²) against
    rounding (~1e-16 |loss| / eps), which dominates for elements whose gradient happens
    to be small: random inputs then stay well inside the 1e-6 tolerance.
    """
    variables = as_variables(inputs)
    loss = weighted_sum(build(*variables))
    return en.check_gradients(loss, variables=variables, eps=eps)


def assert_gradients(build: Callable[..., en.Node], inputs: Sequence[np.ndarray],
                     tol: float = GRAD_TOL) -> float:
    """Assert that the analytic gradients of ``build`` match central differences."""
    err = gradient_error(build, inputs)
    assert err <= tol, f"largest relative gradient error {err:.3g} > {tol:g}"
    return err
