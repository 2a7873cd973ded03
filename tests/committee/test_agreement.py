"""Agreement statistics over the committee's stored votes: the kappas on textbook examples, and
every figure on the votes of a relabel run against scripted servers with known answers."""

from __future__ import annotations

import json
import threading

import pytest
from typer.testing import CliRunner

from db import open_db, revisions
from tests.scripted_openai import ScriptedServer, tool_call_reply
from tests.tui_data import first_assistant, sample_store
from workbench.curation import decisions
from workbench.cli import app
from workbench.committee.agreement import agreement, cohen, fleiss
from workbench.jobs.runner import execute, submit

G = {"name": "FindRestaurants", "arguments": {"city": "Oakland", "cuisine": "Italian"}}
O = {"name": "FindRestaurants", "arguments": {"city": "Fremont", "cuisine": "Thai"}}
R = {"name": "respond_to_user", "arguments": {"message": "Which city?"}}
GARBAGE = {"raw": "<html>nope</html>"}
# trace -> what members a, b and c answer on its first assistant turn
SCRIPT = {1: (G, G, G), 2: (G, G, G), 3: (G, G, O), 4: (G, O, O), 5: (G, R, GARBAGE),
          6: (R, R, R)}


def test_fleiss_kappa_on_the_textbook_example():
    """Fleiss (1971) as Wikipedia works it: 10 subjects, 14 raters, 5 categories;
    P-bar = 0.378, P-bar_e = 0.213, kappa = (0.378 - 0.213) / (1 - 0.213) = 0.210."""
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    ratings = [[cat for cat, n in zip("ABCDE", row) for _ in range(n)] for row in table]
    res = fleiss(ratings)
    assert res["kappa"] == pytest.approx(0.210, abs=0.0005)
    assert res["turns"] == 10 and res["raters"] == 14


def test_cohen_kappa_on_a_two_by_two_example():
    """50 subjects: yes/yes 20, yes/no 5, no/yes 10, no/no 15. p_o = 35/50 = 0.7;
    p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4."""
    pairs = ([("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10
             + [("no", "no")] * 15)
    assert cohen(pairs) == {"kappa": pytest.approx(0.4), "turns": 50}


def test_kappa_is_undefined_with_one_category_or_no_turn():
    assert cohen([("a", "a")] * 5) == {"kappa": None, "turns": 5}
    assert cohen([]) == {"kappa": None, "turns": 0}
    assert fleiss([["a", "a", "a"]] * 4)["kappa"] is None
    assert fleiss([]) == {"kappa": None, "turns": 0, "raters": 0}
    with pytest.raises(ValueError, match="same number"):
        fleiss([["a", "b"], ["a"]])


@pytest.fixture
def db_path(tmp_path):
    return sample_store(tmp_path / "a.db", tuple(SCRIPT))


def member(db, which: int):
    """A scripted member answering SCRIPT[trace][which] (the trace found by its first user
    message in the prompt)."""
    firsts = {t: "[0] user: " + revisions.current_messages(db, t)[0]["content"] + "\n"
              for t in SCRIPT}
    assert len(set(firsts.values())) == len(firsts)
    lock = threading.Lock()

    def reply(body):
        text = body["messages"][-1]["content"]
        with lock:
            (t,) = [t for t, first in firsts.items() if first in text]
        answer = SCRIPT[t][which]
        return answer if "raw" in answer else tool_call_reply(answer["name"],
                                                              answer["arguments"])
    return reply


def test_agreement_of_a_relabel_run_with_known_answers(db_path):
    db = open_db(db_path)
    with ScriptedServer(member(db, 0)) as a, ScriptedServer(member(db, 1)) as b, \
            ScriptedServer(member(db, 2)) as c:
        names = [f"{s.url}#m" for s in (a, b, c)]
        job_id = submit(db, "relabel", {}, {"committee": names, "accept": True})
        row = execute(db, job_id)
    assert row["status"] == "succeeded", row["error"]
    assert row["result"]["outcomes"]["review"] == 1          # trace 5: G, R, garbage: a tie
    res = row["result"]["agreement"]
    A, B, C = names
    assert res["turns"] == 6 and res["decided"] == 5 and res["analyst_decided"] == 0
    # decisions: 1 G, 2 G, 3 G (2 of 3), 4 O (2 of 3), 6 R; trace 5 has none
    assert res["members"][A]["committee"] == {"agreed": 4, "over": 5, "share": 0.8}
    assert res["members"][B]["committee"] == {"agreed": 5, "over": 5, "share": 1.0}
    assert res["members"][C]["committee"] == {"agreed": 4, "over": 5, "share": 0.8}
    assert res["members"][C]["abstained"] == 1 and res["members"][A]["abstained"] == 0
    assert res["members"][A]["analyst"] == {"agreed": 0, "over": 0, "share": None}
    kappas = {(p["a"], p["b"]): p for p in res["cohen"]}
    # a-b over 6 turns: a G G G G G R, b G G G O R R. Whole call: p_o = 4/6,
    # p_e = 5/6*3/6 + 1/6*2/6 = 17/36, kappa = (24-17)/(36-17) = 7/19. Function (F/R):
    # p_o = 5/6, p_e = 5/6*4/6 + 1/6*2/6 = 22/36, kappa = 8/14.
    assert kappas[A, B]["call"] == {"kappa": round(7 / 19, 4), "turns": 6}
    assert kappas[A, B]["function"] == {"kappa": round(8 / 14, 4), "turns": 6}
    # a-c over 5 turns (c abstained on 5): a G G G G R, c G G O O R. p_o = 3/5,
    # p_e = .8*.4 + .2*.2 = .36, kappa = .24/.64 = .375; functions agree on every turn: 1
    assert kappas[A, C]["call"] == {"kappa": 0.375, "turns": 5}
    assert kappas[A, C]["function"] == {"kappa": 1.0, "turns": 5}
    # b-c: b G G G O R, c G G O O R. p_o = 4/5, p_e = .6*.4 + .2*.4 + .2*.2 = .36,
    # kappa = .44/.64 = .6875
    assert kappas[B, C]["call"] == {"kappa": 0.6875, "turns": 5}
    # Fleiss over the 5 turns all three answered: GGG GGG GGO GOO RRR. P-bar = (1+1+1/3+1/3+1)/5
    # = 11/15, p = (.6, .2, .2), P-bar_e = .44, kappa = (11/15 - .44) / .56
    fl = res["fleiss"]
    assert fl["call"] == {"kappa": round((11 / 15 - 0.44) / 0.56, 4), "turns": 5, "raters": 3}
    assert fl["function"] == {"kappa": 1.0, "turns": 5, "raters": 3}

    # the analyst decides later: trace 4 edited back to G, trace 5's R proposal accepted
    i4, i5 = first_assistant(db, 4), first_assistant(db, 5)
    decisions.edit(db, 4, i4, "ada", tool_calls=[{"id": "h", "type": "function",
                                                  "function": G}], content=None)
    (prop,) = [r for r in decisions.proposals(db, 5, i5)
               if r["tool_calls"][0]["function"]["name"] == "respond_to_user"]
    decisions.accept(db, prop["id"], "ada")
    later = agreement(db, job_id)
    assert later["analyst_decided"] == 2
    assert later["members"][A]["analyst"] == {"agreed": 1, "over": 2, "share": 0.5}
    assert later["members"][B]["analyst"] == {"agreed": 1, "over": 2, "share": 0.5}
    assert later["members"][C]["analyst"] == {"agreed": 0, "over": 2, "share": 0.0}
    assert later["cohen"] == res["cohen"] and later["fleiss"] == res["fleiss"]
    # every run's newest votes: the same single run; another job has none
    assert agreement(db)["members"] == later["members"]
    assert agreement(db, job_id + 100)["turns"] == 0

    r = CliRunner().invoke(app, ["--db", str(db_path), "agreement", "--job", str(job_id),
                                 "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == json.loads(json.dumps(later))
    r = CliRunner().invoke(app, ["--db", str(db_path), "agreement"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "6 turns with votes (every run): 5 decided by the committee, 2 decided by the" \
        " analyst since" in out
    assert "80% (4/5)" in out and "0.688 (5 turns)" in out
    assert "0.09-0.91" in out and "at least 0.9 for every member" in out
    assert "Fleiss' kappa (3 members): function 1.000 (5 turns), whole call 0.524" in out
    r = CliRunner().invoke(app, ["--db", str(db_path), "agreement", "--job", "999"])
    assert r.exit_code == 1 and "no relabel job 999" in r.output
    db.conn.close()
