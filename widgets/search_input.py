"""The traces screen's search box: an Input that keeps the focus while the table reloads.

A reload of the table under it (a debounced search as you type) makes Textual lay the screen
out again, and the box can drop out of the visible map for a frame; a focused widget that is
hidden gives its focus away, so the next keys typed went to the table and Enter opened the first
result instead of applying the search. This box keeps its focus through such a frame; leaving
the screen still moves focus as usual (focus is per screen)."""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class SearchInput(Input):
    def _on_hide(self, event: events.Hide) -> None:
        if self.screen.is_current:
            event.prevent_default()   # a transient layout frame: keep typing here (Textual would
                                      # call Widget._on_hide, which blurs, after this handler)
