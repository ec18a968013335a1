"""Numerical gradient checks: analytic gradients against float64 central differences."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engine.autodiff import gradients
from engine.graph import (GraphError, Node, Placeholder, Variable, ordered_names,
                          trainable_variables)
from engine.session import Session


def check_gradients(loss: Node, feed: dict | None = None,
                    variables: Sequence[Node] | None = None, eps: float = 1e-6,
                    session: Session | None = None, seed: int = 0) -> float:
    """The largest relative error between analytic and numerical gradients of ``loss``.

    The relative error of an element is ``|a - n| / max(|a|, |n|, 1e-8)``; the result is
    the maximum over every element of every variable (default: the trainable variables
    ``loss`` depends on; placeholders may be listed too, their fed values are perturbed).
    Runs in float64 (a new float64 session from ``seed`` unless ``session`` is given).
    A non-scalar loss is summed.
    """
    feed = dict(feed or {})
    if session is None:
        session = Session(seed=seed, dtype=np.float64)
    if session.float_dtype != np.float64:
        raise ValueError("check_gradients needs a float64 session")
    variables = trainable_variables(loss) if variables is None else list(variables)
    if not variables:
        raise GraphError(f"check_gradients: '{loss.name}' depends on no variable")
    for v in variables:
        if isinstance(v, Placeholder):
            if v not in feed:
                raise GraphError(f"check_gradients: placeholder '{v.name}' is listed but not fed")
            feed[v] = np.array(feed[v], dtype=np.float64)
        elif not isinstance(v, Variable):
            raise GraphError(f"check_gradients: can perturb variables and placeholders, not "
                             f"{v.describe()}")
    analytic = session.run(gradients(loss, variables), feed)
    # The names the plans gave the variables: an unnamed variable's name depends on its graph.
    _, names = ordered_names([loss, *variables])

    def value() -> float:
        return float(np.sum(session.run(loss, feed, training=False)))

    live = session.variables(copy=False)  # every listed variable: the run above bound them
    worst = 0.0
    for v, a in zip(variables, analytic):
        # Perturb the live array: the fed one, or the session's storage of the variable.
        x = feed[v] if isinstance(v, Placeholder) else live[names[v]]
        flat = x.reshape(-1)
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        for i in range(flat.size):
            orig = flat[i]
            flat[i] = orig + eps
            up = value()
            flat[i] = orig - eps
            down = value()
            flat[i] = orig
            n = (up - down) / (2 * eps)
            err = abs(a[i] - n) / max(abs(a[i]), abs(n), 1e-8)
            worst = max(worst, err)
    return worst
