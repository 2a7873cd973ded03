"""The selected traces as a sequence the checks can walk again and again without holding them.

`run_checks` gives the checks a `StoredTraces` instead of a list: iterating it reads the
conversations from the store a batch at a time, and a slice (coherence's interleaved groups)
reads just that slice. The checks keep their code (`for t in ctx.traces`, `len(ctx.traces)`,
`ctx.traces[g::n]`), so they give the same flags as on a list, while memory holds a batch or a
group, not the corpus: the 1.4 GB at 10,000 traces was the loaded conversations.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence

from sqlite_utils import Database

from db.queries import TraceFilter
from db.traces import trace_ids
from workbench.conversations.view import Conversation, TaskContext, iter_conversations


class StoredTraces(Sequence):
    """The conversations of a fixed list of trace ids (the selection when the run started, so
    flags written meanwhile cannot change what a later pass sees), read `batch` at a time."""

    def __init__(self, db: Database, ids: list[int], task: TaskContext, batch: int = 500,
                 census: dict | None = None):
        self.db, self.ids, self.task, self.batch = db, list(ids), task, max(1, batch)
        # conversations read and not yet freed, and the most at once (what memory holds)
        self.census = census if census is not None else {"live": 0, "peak": 0}

    @classmethod
    def select(cls, db: Database, flt: TraceFilter | None, task: TaskContext,
               batch: int = 500) -> StoredTraces:
        where, params = (flt or TraceFilter()).where()
        return cls(db, trace_ids(db, where, params, ordered=True), task, batch)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[Conversation]:
        for start in range(0, len(self.ids), self.batch):
            yield from self._load(self.ids[start:start + self.batch])

    def __getitem__(self, index):
        if isinstance(index, slice):
            ids = self.ids[index]
            return [c for start in range(0, len(ids), self.batch)
                    for c in self._load(ids[start:start + self.batch])]
        return self._load([self.ids[index]])[0]

    def without(self, trace_ids: set[int]) -> StoredTraces:
        """The same traces less these (a check that fails on them runs on the others)."""
        return StoredTraces(self.db, [i for i in self.ids if i not in trace_ids], self.task,
                            self.batch, self.census)

    @property
    def peak(self) -> int:
        """The most conversations of this selection that were in memory at once."""
        return self.census["peak"]

    def _load(self, ids: list[int]) -> list[Conversation]:
        out = [c for b in iter_conversations(self.db, TraceFilter(trace_ids=ids),
                                             batch=len(ids), task=self.task) for c in b]
        census = self.census
        census["live"] += len(out)
        census["peak"] = max(census["peak"], census["live"])
        for c in out:
            weakref.finalize(c, _freed, census)
        return out


def _freed(census: dict) -> None:
    census["live"] -= 1
