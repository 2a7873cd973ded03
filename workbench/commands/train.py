"""`train`: LoRA fine-tuning -> merged model -> GGUF, as a job (headless; the app runs the same)."""

from __future__ import annotations

import typer
from rich.text import Text

from workbench.commands.common import (JobRequest, console, err_console, print_json, state,
                                       user_errors)
from workbench.commands.common import job_options
from workbench.commands.jobs import run_request


def register(app: typer.Typer) -> None:
    @app.command("train")
    @job_options("train")
    def train_cmd(
        ctx: typer.Context,
        job: JobRequest,
        plan: bool = typer.Option(False, "--plan", help="print the data plan, do not train"),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Fine-tune a LoRA on the selected traces (default: all but the test split, without
        excluded traces), merge it, export GGUF, register the model.

        Several processes, as one job: `--nproc N` (one per GPU; on a CPU, gloo) starts them
        with torchrun, or with `accelerate launch` (`--launcher accelerate`,
        `--accelerate-config FILE` for DDP, FSDP or DeepSpeed: configs/distributed/). Rank 0
        writes the store; cancel, SIGTERM and `jobs resume` work as for one process.
        """
        from workbench.models.hf_loading import resolve_base_model
        from workbench.jobs.registry import get_spec
        from workbench.training.estimate import estimate, measure_rate
        from workbench.training.launch import in_a_launched_rank
        from workbench.training.rank import init_process_group
        from workbench.training.trainer import is_main_process, prepare, train

        db = state(ctx).db()
        spec = get_spec("train")
        params = spec.make_params(job.params)
        selection = spec.make_selection(job.selection)
        if plan:
            with user_errors():
                base = resolve_base_model(params.base_model)
                _, examples, data_plan, _ = prepare(db, base, params.data(selection),
                                                    cfg=params.config(None))
            err_console.print(Text("timing one micro-batch to estimate the run (loading the"
                                   " base model)..."))
            rate = measure_rate(base, examples, params.lora_r, params.precision)
            data_plan["estimate"] = estimate(data_plan, rate, epochs=params.epochs,
                                             seqs_per_step=params.seqs_per_step,
                                             max_steps=params.max_steps)
            if as_json:
                print_json(data_plan)
                return
            console.print(Text(plan_text(data_plan, params.suspect)))
            return
        if in_a_launched_rank():   # under the user's own torchrun: join the ranks first
            init_process_group()
        if not is_main_process():  # DDP ranks > 0 train alongside rank 0, write nothing
            with user_errors():
                train(db, params.config(None), params.data(selection), ctx=None)
            return
        # progress goes to stderr with --json too: stdout holds only the result
        row = run_request(ctx, job, quiet=as_json, progress_bar=True)
        result = row["result"]
        if as_json:
            print_json({"job_id": row["id"], **result})
            return
        m = result["metrics"]
        console.print(Text(f"trained {m['steps']} steps, loss {m['first_loss']} -> "
                           f"{m['last_loss']}, {m['tokens_per_s']} tok/s\n"
                           f"merged: {result['merged']}\nGGUF: {result['gguf']}\n"
                           f"registered as model {result['name']} {result['model_ids']}"))


def plan_text(p: dict, suspect: str) -> str:
    """`train --plan` for a person: the data, what is left out of the loss and why, the time."""
    from workbench.training.estimate import fmt_duration

    pt = p["per_turn"]
    lines = [f"{p['conversations']} conversations, {p['assistant_turns']} assistant turns:"
             f" {p['sequences']} sequences, {p['tokens']:,} tokens, {p['supervised_tokens']:,}"
             " supervised (one sequence per conversation)"]
    if suspect == "mask":
        lines.append(f"suspect turns (error flags): {p['masked_suspect_turns']} masked (kept as"
                     " context, no loss; --suspect train trains on them)")
    elif suspect == "drop":
        lines.append(f"suspect turns (error flags): {p['suspect_turns']}; their"
                     f" {p['dropped_conversations']} conversations are left out (--suspect drop)")
    else:
        lines.append(f"suspect turns (error flags): {p['suspect_turns']}, trained on"
                     " (--suspect train)")
    if p.get("sizing"):
        from workbench.training.sizing import describe

        lines.append(describe(p["sizing"]))
    past = (f"turns ending past --max-length {p['max_length']}: {p['windowed_turns']} trained"
            " in windows (the system prompt and tools, then the latest messages that fit),"
            f" {p['turns_without_prompt']} without their system prompt and tools (the latest"
            f" messages alone), {p['turns_past_max_length']} too long even so (no loss)")
    if p["prompts_past_max_length"]:
        past += (f"; the system prompt and tools alone are {p['prompt_tokens']:,} tokens, not less"
                 f" than --max-length in {p['prompts_past_max_length']} conversations")
    elif p["turns_past_max_length"] or p["windowed_turns"] or p["turns_without_prompt"]:
        past += f"; the system prompt and tools alone are {p['prompt_tokens']:,} tokens"
    if p["turns_without_prompt"]:
        past += (f"; --max-length {p['length_keeping_prompt']:,} would keep the system prompt"
                 " of every turn")
    lines.append(past)
    lines.append(f"per-turn expansion (--per-turn): {pt['sequences']} sequences,"
                 f" {pt['tokens']:,} tokens ({pt['tokens'] / max(p['tokens'], 1):.1f}x more),"
                 f" the same {pt['supervised_tokens']:,} supervised")
    e = p["estimate"]
    m = e["measured"]
    lines.append(f"estimated time here: about {fmt_duration(e['seconds'])} for {e['steps']} steps,"
                 f" {e['tokens']:,} tokens at {e['tokens_per_s']:,.0f} tokens/s on {m['device']}"
                 f" (one micro-batch of {m['tokens']:,} tokens timed; loading"
                 f" {fmt_duration(m['load_s'])}; merging and GGUF not counted)")
    if e["suggest"]:
        s = e["suggest"]
        lines.append(f"that is over 15 minutes: --max-steps {s['max_steps']} takes about"
                     f" {fmt_duration(s['seconds'])} ({s['sequences']} sequences); or narrow the"
                     " data (--limit N, filters), lower --max-length, or run it with --detach")
    return "\n".join(lines)
