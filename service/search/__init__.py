"""Searchers: what proposes the next trial's config (see :mod:`service.search.base` for
the interface).

One module per kind: :mod:`~service.search.base` holds today's grid and random search
(:class:`BasicSearcher`, the default), :mod:`~service.search.optuna` Optuna's samplers
through ask and tell (``optuna_search()``, the ``optuna`` extra; Optuna itself is imported
only when such a sweep runs). The controller imports only this package.
"""

from __future__ import annotations

from typing import Any

from service.search.base import FINISHED, BasicSearcher, Searcher
from service.search.optuna import OptunaSearcher, optuna_search
from service.spec import OptunaSpec


def make_searcher(spec, sampler_instance: Any = None) -> Searcher:
    """The searcher a sweep spec asks for (``spec.search``): grid and random search by
    default; ``sampler_instance`` is an Optuna sampler given to ``optuna_search``."""
    if isinstance(spec.search, OptunaSpec):
        return OptunaSearcher(spec.search, sampler_instance)
    return BasicSearcher()


__all__ = ["FINISHED", "BasicSearcher", "OptunaSearcher", "OptunaSpec", "Searcher",
           "make_searcher", "optuna_search"]
