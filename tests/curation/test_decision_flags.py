"""A warning that only says a proposal waits for review (normalisation's "proposed for
review") ends with the decision on it: accepted, rejected, kept over or edited, the turn shows
no stale warning; while another proposal is still open, it stays."""

from __future__ import annotations

import pytest

from db import browse
from db.revisions import add_revision
from tests.tui_data import add_flag, first_assistant, sample_store
from workbench.curation import decisions
from workbench.curation.normalize import NAME

CALL = [{"id": "c1", "type": "function",
         "function": {"name": "respond_to_user", "arguments": {"message": "hi"}}}]


@pytest.fixture
def db(tmp_path):
    from db import open_db

    database = open_db(sample_store(tmp_path / "d.db"))
    yield database
    database.conn.close()


def _propose(db, tid: int, n: int = 1) -> tuple[int, list[int]]:
    idx = first_assistant(db, tid)
    revs = [add_revision(db, tid, idx, tool_calls=CALL, author_kind="normaliser",
                         author_name="normalize", reason="map", status="proposed")
            for _ in range(n)]
    add_flag(db, tid, idx, NAME, "warning", "ambiguous mapping: proposed for review")
    return idx, revs


def _warnings(db, tid: int, idx: int) -> list[str]:
    return [f["check_name"] for f in browse.flags_of(db, tid) if f["message_idx"] == idx]


@pytest.mark.parametrize("how", ["accept", "reject", "keep", "edit", "bulk"])
def test_the_review_warning_ends_with_the_decision(db, how):
    idx, (rev,) = _propose(db, 1)
    assert _warnings(db, 1, idx) == [NAME]
    if how == "accept":
        decisions.accept(db, rev, "ada")
    elif how == "reject":
        decisions.reject(db, rev, "ada")
    elif how == "keep":
        decisions.keep(db, 1, idx, "ada")
    elif how == "edit":
        decisions.edit(db, 1, idx, "ada", tool_calls=CALL, content=None)
    else:
        decisions.bulk_decide(db, "rejected", "ada", ids=[1])
    assert NAME not in _warnings(db, 1, idx)


def test_it_stays_while_another_proposal_waits(db):
    idx, (first, second) = _propose(db, 2, n=2)
    decisions.reject(db, first, "ada")
    assert _warnings(db, 2, idx) == [NAME]
    decisions.reject(db, second, "ada")
    assert _warnings(db, 2, idx) == []
