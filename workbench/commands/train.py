"""`train`: LoRA fine-tuning -> merged model -> GGUF, as a job (headless; the app runs the same)."""

from __future__ import annotations

import typer
from rich.text import Text

from workbench.commands.common import JobRequest, console, print_json, state, user_errors
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

        Multi-GPU: `accelerate launch -m workbench train ...` or
        `torchrun --nproc_per_node N -m workbench train ...` (DDP; rank 0 writes the store).
        """
        from workbench.hf_loading import resolve_base_model
        from workbench.job_specs import get_spec
        from workbench.training.trainer import is_main_process, prepare, train

        db = state(ctx).db()
        spec = get_spec("train")
        params = spec.make_params(job.params)
        selection = spec.make_selection(job.selection)
        if plan:
            with user_errors():
                _, _, data_plan = prepare(db, resolve_base_model(params.base_model),
                                          params.data(selection))
            if as_json:
                print_json(data_plan)
                return
            pt = data_plan["per_turn"]
            console.print(Text(
                f"one sequence per conversation: {data_plan['sequences']} sequences,"
                f" {data_plan['tokens']:,} tokens, {data_plan['supervised_tokens']:,}"
                f" supervised\nper-turn expansion: {pt['sequences']} sequences,"
                f" {pt['tokens']:,} tokens, {pt['supervised_tokens']:,} supervised\n"
                f"ratio: {pt['tokens'] / max(data_plan['tokens'], 1):.1f}x fewer tokens"))
            return
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
