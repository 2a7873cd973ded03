"""`relabel` (the committee), `agreement` and `relevance`: jobs and reports over the stored
votes and verdicts."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from workbench.commands.common import (JobRequest, console, job_options, print_json, state,
                                       user_errors)
from workbench.commands.jobs import run_request
from workbench.core.safe_text import visible


def print_relabel(result: dict) -> None:
    out = result["outcomes"]
    console.print(Text(
        f"{result['voted']} turns voted on: {out['revised']} relabelled, {out['confirmed']}"
        f" confirmed, {out['review']} sent to review, {out['failed']} failed; {out['human']}"
        f" kept as the analyst decided"))
    accepting = result.get("accepting")
    if accepting:
        console.print(Text(visible(accepting["why"]) + (
            f" ({result.get('proposed_decisions', 0)} agreed decisions proposed)"
            if not accepting["accept"] else "")))
    if result.get("changed_meanwhile"):
        console.print(Text(f"{result['changed_meanwhile']} turns left as they were: the analyst"
                           " decided on them while the members were asked"))
    table = Table("member", "calls", "tokens in", "tokens out", "cost", "failures")
    for name, m in result["members"].items():
        table.add_row(Text(visible(name)), str(m["calls"]), str(m["tokens_in"]),
                      str(m["tokens_out"]), "" if m["cost"] is None else f"{m['cost']:.4f}",
                      str(m["failures"]))
    console.print(table)
    console.print(Text(f"{result['calls']} calls ({result['calls_per_turn']} per turn);"
                       f" {result['units']['reused']} replies reused from earlier runs"))
    print_batch(result.get("batch"))


def print_batch(batch: dict | None) -> None:
    """A batch endpoint's requests, each once (see README, Batch endpoints)."""
    if batch:
        console.print(Text(f"{batch['batches']} batches: {batch['answered']} requests answered,"
                           f" {batch['failed']} failed, {batch['pending']} pending"))


def _kappa(figure: dict) -> str:
    k = "undefined" if figure["kappa"] is None else f"{figure['kappa']:.3f}"
    return f"{k} ({figure['turns']} turns)"


def _share(s: dict) -> str:
    if not s["over"]:
        return "-"
    return f"{s['share']:.0%} ({s['agreed']}/{s['over']})"


def print_agreement(res: dict, state_db=None) -> None:
    scope = f"job {res['job_id']}" if res["job_id"] is not None else "every run"
    console.print(Text(f"{res['turns']} turns with votes ({scope}): {res['decided']} decided by"
                       f" the committee, {res['analyst_decided']} decided by the analyst since"))
    if not res["turns"]:
        return
    from workbench.committee.trust import CONFIDENCE, THRESHOLD_KEY, interval, threshold

    limit = threshold(state_db) if state_db is not None else None
    table = Table("member", "role", "votes", "abstained", "= committee", "= analyst",
                  f"{CONFIDENCE:.0%} interval")
    for name, m in res["members"].items():
        lo, hi = interval(m["analyst"]["agreed"], m["analyst"]["over"])
        table.add_row(Text(visible(name)), m["role"], str(m["votes"]), str(m["abstained"]),
                      _share(m["committee"]), _share(m["analyst"]),
                      f"{lo:.2f}-{hi:.2f}" if m["analyst"]["over"] else "-")
    console.print(table)
    if limit is not None:
        console.print(Text(f"a committee's decisions become labels without --accept when the"
                           f" interval's lower end is at least {limit:g} for every member"
                           f" ({THRESHOLD_KEY}; over every run's votes)"), style="dim")
    if res["cohen"]:
        pairs = Table("member", "member", "Cohen's kappa: function", "whole call")
        for p in res["cohen"]:
            pairs.add_row(Text(visible(p["a"])), Text(visible(p["b"])), _kappa(p["function"]),
                          _kappa(p["call"]))
        console.print(pairs)
    fl = res["fleiss"]
    if fl["call"]["raters"] >= 2:
        console.print(Text(f"Fleiss' kappa ({fl['call']['raters']} members): function"
                           f" {_kappa(fl['function'])}, whole call {_kappa(fl['call'])}"))
    console.print(Text("kappa: 1 = perfect agreement, 0 = what chance gives, < 0 = worse;"
                       " abstentions left out"), style="dim")


def print_relevance(result: dict) -> None:
    console.print(Text(
        f"{result['judged']} traces judged: {result['on_task']} on task, {result['off_task']}"
        f" off task (flagged 'relevance', left out of training unless you include them);"
        f" {result['failed']} failed"))
    cost = "" if result["cost"] is None else f", cost {result['cost']:.4f}"
    console.print(Text(f"{result['calls']} calls, {result['tokens']['in']} tokens in,"
                       f" {result['tokens']['out']} out{cost}; {result['units']['reused']}"
                       " verdicts reused from earlier runs"))
    print_batch(result.get("batch"))


def register(app: typer.Typer) -> None:
    @app.command("agreement")
    def agreement_cmd(
        ctx: typer.Context,
        job: Optional[int] = typer.Option(None, "--job", help="only this relabel job's votes"
                                          " (default: the newest votes on each turn)"),
        as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
    ) -> None:
        """How far the committee's members agree: with the committee's decisions, with the
        analyst's later decisions, and with each other (Cohen's and Fleiss' kappa, on the
        function and on the whole call)."""
        from db.jobs import get_job
        from workbench.committee.agreement import agreement

        db = state(ctx).db()
        with user_errors():
            if job is not None:
                row = get_job(db, job)
                if row is None or row["kind"] != "relabel":
                    raise ValueError(f"no relabel job {job}" + (f" (job {job} is a"
                                     f" {row['kind']} job)" if row else ""))
            res = agreement(db, job)
        if as_json:
            print_json(res)
        else:
            print_agreement(res, db)

    @app.command("relabel")
    @job_options("relabel")
    def relabel_cmd(
        ctx: typer.Context,
        job: JobRequest,
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """A committee of LLMs votes on the doubtful turns: agreement becomes a revision (or a
        confirmation), disagreement goes to the arbiter or the review queue. Every vote is
        stored; an analyst's own label is never overwritten."""
        result = run_request(ctx, job, quiet=as_json)["result"]
        if as_json:
            print_json(result)
        else:
            print_relabel(result)

    @app.command("relevance")
    @job_options("relevance")
    def relevance_cmd(
        ctx: typer.Context,
        job: JobRequest,
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """A judge decides whether each selected trace is on the task; an off-task trace gets
        a 'relevance' error flag (with the judge's reason) and leaves training unless you
        include it. Verdicts are cached: a re-run asks again only where a request failed."""
        result = run_request(ctx, job, quiet=as_json)["result"]
        if as_json:
            print_json(result)
        else:
            print_relevance(result)
