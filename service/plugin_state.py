"""What searchers and schedulers share: state persisted in the sweep folder.

The controller writes ``state_dict()`` when ``dirty`` — before the suggestion or decision
that changed it takes effect — and a resumed driver hands it back to ``load_state_dict``.
"""

from __future__ import annotations


class PluginState:
    """A plug-in's persisted state: subclasses return it from :meth:`state` and call
    :meth:`changed` whenever it changes."""

    _dirty = False

    @property
    def dirty(self) -> bool:
        """True when the state changed since :meth:`state_dict` was last called."""
        return self._dirty

    def changed(self) -> None:
        self._dirty = True

    def state_dict(self) -> dict:
        """Everything needed to continue after a driver restart (JSON data)."""
        self._dirty = False
        return self.state()

    def state(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Continue from what :meth:`state_dict` returned in an earlier driver."""
