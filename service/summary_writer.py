"""Write the engine's summaries to a TensorBoard run outside a sweep (a notebook, a script).

    from service.summary_writer import SummaryWriter

    merged = en.summary.merge_all(loss)
    with SummaryWriter("logs/notebook", purge_step=0) as writer:
        writer.graph(loss)
        for step in range(300):
            _, summaries = sess.run([train, merged], feed)
            writer.add(step, summaries)

Inside a sweep, ``trial.report(step, summaries)`` writes them into the trial's run instead.
Events go through the service's own writer (:class:`service.events.RunWriter`): each one is
written at once, and ``flush()`` makes them durable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from engine.summary import Summaries


class SummaryWriter:
    """One TensorBoard run in ``logdir`` (``tensorboard --logdir`` on its parent shows it).

    ``purge_step``: first drop the run's events at that step and above, so that running a
    notebook's training again from step ``purge_step`` shows each step once.
    """

    def __init__(self, logdir: str | os.PathLike, *, purge_step: int | None = None) -> None:
        from service.events import RunWriter   # tensorboardX loads with the first writer

        self.logdir = Path(logdir)
        self._writer = RunWriter(self.logdir, resume_step=purge_step)

    def add(self, step: int, summaries: Summaries | Mapping[str, float]) -> None:
        """Write at ``step`` what running a summary node returned (its scalars as one event,
        each histogram as one), or a dict of scalars ``{tag: number}``."""
        if isinstance(summaries, Summaries):
            scalars, histograms = summaries.scalars, summaries.histograms
        elif isinstance(summaries, Mapping):
            scalars, histograms = summaries, {}
        else:
            raise TypeError(f"SummaryWriter.add: expected what sess.run of an en.summary node "
                            f"returns, or a dict of tag -> number, got {type(summaries).__name__}")
        if scalars:
            self._writer.scalars(step, scalars)
        for tag, values in histograms.items():
            self._writer.histogram(tag, values, step)

    def graph(self, fetches) -> None:
        """Show the graph that computes ``fetches`` (a node, or a list of nodes) in the
        Graphs tab."""
        from engine import graph_def

        self._writer.graph(graph_def(fetches))

    def flush(self) -> None:
        """Make everything written so far durable."""
        self._writer.sync()

    def close(self) -> None:
        """flush() and close; closing twice is harmless."""
        self._writer.close()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
