"""The searcher interface: what proposes the next trial's config.
 ``suggest`` is asked when a slot is free and no
known trial waits; ``on_result`` and ``on_complete`` tell the searcher how trials do. A
searcher's state is persisted with the sweep (``state_dict``) before a suggestion runs, so a
resumed driver continues it instead of starting over.

A searcher that knows every trial in advance (grid and random search) lists them in
``planned()``: they are in the trial table from the start, as PENDING.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.plugin_state import PluginState
from service.spec import expand_trials


class _Finished:
    def __repr__(self) -> str:
        return "FINISHED"


#: ``suggest`` returns this when the searcher will propose no more trials
FINISHED = _Finished()


class Searcher(PluginState):
    """The interface, and the default of no trials at all."""

    def setup(self, spec, folder: Path | None = None, trials: list | None = None) -> None:
        """Called once per driver start (after :meth:`load_state_dict` on a resume) with the
        sweep's spec, its folder, and the trial table's records as storage has them."""
        self.spec = spec

    def planned(self) -> list | None:
        """Every trial (``TrialSpec``) when they are known in advance, else None."""
        return None

    def suggest(self, index: int) -> dict | None | _Finished:
        """The config of trial number ``index``; None when nothing can be proposed now (ask
        again later), FINISHED when no more trials will come."""
        return FINISHED

    def on_result(self, trial_id: str, step: int, metrics: dict) -> None:
        """A report of ``trial_id``."""

    def on_complete(self, trial_id: str, state: Any, metrics: dict,
                    pruned: bool = False) -> None:
        """``trial_id`` reached a final state with these last metrics; ``pruned`` when a
        scheduler stopped it early."""


class BasicSearcher(Searcher):
    """Grid and random search: ``num_samples`` repeats of the grids' product, the random
    values of trial ``i`` drawn from a generator seeded by ``(seed, i)``. Its trials are a
    pure function of the spec, so it has no state to persist."""

    def setup(self, spec, folder: Path | None = None, trials: list | None = None) -> None:
        super().setup(spec, folder, trials)
        self._trials = expand_trials(spec)

    def planned(self) -> list:
        return self._trials

    def suggest(self, index: int):
        return self._trials[index].config if index < len(self._trials) else FINISHED

