"""Coherence and off-domain content, learned from the task, the tool schemas and the corpus.

- Trace level: a conversation from another product. Its service calls carry arguments that no
  tool declares and its results carry fields that no tool knows, or (without calls) its words
  are foreign to the task description and the tool schemas.
- Turn level: a message that does not fit its place. Every message-only turn (what the
  assistant says) is compared with the corpus by retrieval: the answers most like it are found
  in other conversations, and the messages around them (the user turn before, the user turn
  after) should look like the messages around this one. A message pasted from another
  conversation or another domain has neighbours whose surroundings do not match its own; its
  specific words (names, numbers) are also missing from its conversation.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from workbench.checks.base import (
    CheckContext,
    calls_of,
    flag,
    message_text,
    result_records,
    words,
)

NAME = "coherence"
K = 10
# Thresholds on the retrieval fit (cosine similarity of the surrounding turns with those around
# the K most similar messages). Set on scenario 1 (clean): ~1.5% of clean turns fall below.
FIT_MIN = 0.02
FIT_WITH_FOREIGN = 0.06
STOP = set("""a an the and or but if of to in on at for with by from is are was were be been am
i you he she it we they me my your our their this that these those there here what which who
whom how when where why do does did have has had will would can could should shall may might
not no yes ok okay so please thanks thank just also too very all any some one as up out about
""".split())


def _known_fields(ctx: CheckContext) -> set[str]:
    out: set[str] = set()
    for fn in ctx.tools.values():
        out.update(((fn.get("parameters") or {}).get("properties") or {}).keys())
    return out


def trace_level(ctx: CheckContext) -> list[dict]:
    if not ctx.tools:
        return []
    known = _known_fields(ctx)
    # result fields seen with schema-valid calls are part of the domain too
    result_known: Counter = Counter()
    for t in ctx.traces:
        for i, m in enumerate(t.messages):
            if m["role"] == "tool" and i and any(
                    isinstance(a, dict) and a and set(a) <= known
                    for _, a in calls_of(t.messages[i - 1])):
                for r in result_records(m):
                    result_known.update(r.keys())
    n_traces = max(1, len(ctx.traces))
    result_fields = known | {k for k, n in result_known.items() if n >= 3 or n / n_traces > 0.01}
    out = []
    for t in ctx.traces:
        arg_names = [k for m in t.messages for n, a in calls_of(m)
                     if ctx.is_service(n) and isinstance(a, dict) for k in a]
        fields = [k for m in t.messages if m["role"] == "tool" for r in result_records(m)
                  for k in r]
        foreign_args = [k for k in arg_names if k not in known]
        foreign_fields = [k for k in fields if k not in result_fields]
        evidence = len(arg_names) + len(fields)
        if evidence and (len(foreign_args) + len(foreign_fields)) / evidence > 0.5:
            sample = sorted(set(foreign_args + foreign_fields))[:5]
            out.append(flag(t, None, NAME, "error",
                            "off-domain conversation: its calls and results use fields no tool"
                            f" of the task has ({', '.join(sample)})"))
    return out


def _idf_vocab(docs: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Smoothed idf of every word and the vocabulary of words in at least two documents."""
    df: Counter = Counter()
    for d in docs:
        df.update(set(words(d)))
    n = len(docs)
    vocab = {w: j for j, w in enumerate(w for w, c in df.items() if c >= 2)}
    idf = {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}
    return idf, vocab


def _vectorize(texts: list[str], idf: dict[str, float], vocab: dict[str, int]) -> np.ndarray:
    mat = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for row, text in enumerate(texts):
        for w, c in Counter(words(text)).items():
            j = vocab.get(w)
            if j is not None:
                mat[row, j] = (1 + math.log(c)) * idf[w]
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    norms[norms == 0] = 1
    return mat / norms


def _context_text(m: dict) -> str:
    if m["role"] == "tool":
        return " ".join(f"{k}" for r in result_records(m)[:1] for k in r) or "result"
    return message_text(m)


def turn_scores(ctx: CheckContext) -> list[dict]:
    """One row per message-only assistant turn: trace, index, and its coherence features."""
    units = []
    for t in ctx.traces:
        msgs = t.messages
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            calls = calls_of(m)
            if calls and any(ctx.is_service(n) for n, _ in calls):
                continue
            text = message_text(m)
            if not text.strip():
                continue
            prev = next((msgs[j] for j in range(i - 1, -1, -1) if msgs[j]["role"] != "system"),
                        None)
            nxt = msgs[i + 1] if i + 1 < len(msgs) else None
            before = " ".join(message_text(x) if x["role"] != "tool" else (x["content"] or "")
                              for x in msgs[:i])
            units.append({"trace": t, "idx": i, "text": text,
                          "prev": _context_text(prev) if prev else "<start>",
                          "next": _context_text(nxt) if nxt else "<end>",
                          "before": before, "pos": i / max(1, len(msgs) - 1)})
    if len(units) < 2 * K:
        return []
    idf, vocab = _idf_vocab([u[k] for k in ("text", "prev", "next") for u in units])
    R = _vectorize([u["text"] for u in units], idf, vocab)
    P = _vectorize([u["prev"] for u in units], idf, vocab)
    N = _vectorize([u["next"] for u in units], idf, vocab)
    trace_of = np.array([u["trace"].id for u in units])
    resp_df = Counter()
    for u in units:
        resp_df.update(set(words(u["text"])))
    for start in range(0, len(units), 512):
        block = slice(start, min(len(units), start + 512))
        sim = R[block] @ R.T
        same = trace_of[block][:, None] == trace_of[None, :]
        sim[same] = -1
        top = np.argpartition(-sim, K, axis=1)[:, :K]
        for row, i in enumerate(range(block.start, block.stop)):
            nb = top[row]
            w = np.clip(sim[row, nb], 0, None) + 1e-6
            p_sim = P[nb] @ P[i]
            n_sim = N[nb] @ N[i]
            units[i]["neighbour_sim"] = float(w.mean())
            units[i]["prev_fit"] = float((w * p_sim).sum() / w.sum())
            units[i]["next_fit"] = float((w * n_sim).sum() / w.sum())
    for u in units:
        before = set(words(u["before"]))
        specific = [w for w in words(u["text"]) if w not in STOP and len(w) > 2 and
                    resp_df[w] <= max(3, 0.005 * len(units))]
        u["foreign"] = sorted({w for w in specific if w not in before})
    return units


SWAP_QUANTILE = 0.5   # flag a message that fits no better than half the messages moved in


def _fit_features(units: list[dict], text_of: np.ndarray, R, P, N, U, rtop, rw, utop, uw,
                  ) -> np.ndarray:
    """Features of message text_of[i] placed at unit i's position: how the turns around it
    resemble those around its K most similar messages (before, after), how it resembles the
    answers to the K user turns most like the one before it (mean, best), and the share of its
    words found nowhere else in the conversation."""
    rows = []
    for i, u in enumerate(units):
        j = text_of[i]
        nb, w = rtop[j], rw[j]
        prev_fit = float((w * (P[nb] @ P[i])).sum() / w.sum())
        next_fit = float((w * (N[nb] @ N[i])).sum() / w.sum())
        answers = R[utop[i]] @ R[j]
        reply_fit = float((uw[i] * answers).sum() / uw[i].sum())
        ws = [x for x in words(units[j]["text"]) if x not in STOP]
        unsup = float(np.mean([x not in u["conv"] for x in ws])) if ws else 0.0
        rows.append([prev_fit, next_fit, reply_fit, float(answers.max()), unsup])
    return np.array(rows)


def _logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 30):
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Z = np.hstack([(X - mu) / sd, np.ones((len(X), 1))])
    b = np.zeros(Z.shape[1])
    for _ in range(steps):   # Newton steps
        p = 1 / (1 + np.exp(-Z @ b))
        grad = Z.T @ (p - y) + l2 * b
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + l2 * np.eye(len(b))
        b -= np.linalg.solve(hess, grad)
    return lambda X2: 1 / (1 + np.exp(-np.hstack([(X2 - mu) / sd, np.ones((len(X2), 1))]) @ b))


def _knn(X: np.ndarray, trace_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tops, weights = [], []
    for start in range(0, len(X), 512):
        block = slice(start, min(len(X), start + 512))
        sim = X[block] @ X.T
        sim[trace_of[block][:, None] == trace_of[None, :]] = -1
        top = np.argpartition(-sim, K, axis=1)[:, :K]
        tops.append(top)
        weights.append(np.clip(np.take_along_axis(sim, top, 1), 0, None) + 1e-6)
    return np.vstack(tops), np.vstack(weights)


def swap_scores(ctx: CheckContext) -> list[dict]:
    """Each message-only turn with `p_moved`: how much it looks like a message moved in from
    another conversation. Learned on the corpus itself: every message is also placed at the
    position of a message from another conversation, a logistic model learns to tell moved
    from in-place messages, and the threshold is the score that SWAP_QUANTILE of the moved
    messages reach, so it needs no labels and follows the corpus."""
    if "coherence.swap" not in ctx.cache:
        ctx.cache["coherence.swap"] = _swap_scores(ctx)
    return ctx.cache["coherence.swap"]


def _swap_scores(ctx: CheckContext) -> list[dict]:
    units = turn_scores(ctx)
    if not units:
        return []
    for u in units:
        msgs = u["trace"].messages
        i = u["idx"]
        u["user_before"] = next((msgs[j]["content"] or "" for j in range(i - 1, -1, -1)
                                 if msgs[j]["role"] == "user"), "<start>")
        conv: set[str] = set()
        for j, x in enumerate(msgs):
            if j != i:
                conv |= set(words(message_text(x) if x["role"] != "tool" else x["content"] or ""))
        u["conv"] = conv
    keys = ("text", "prev", "next", "user_before")
    idf, vocab = _idf_vocab([u[k] for k in keys for u in units])
    R, P, N, U = (_vectorize([u[k] for u in units], idf, vocab) for k in keys)
    trace_of = np.array([u["trace"].id for u in units])
    rtop, rw = _knn(R, trace_of)
    utop, uw = _knn(U, trace_of)
    m = len(units)
    real = _fit_features(units, np.arange(m), R, P, N, U, rtop, rw, utop, uw)
    perm = np.random.default_rng(0).permutation(m)
    perm = np.where(trace_of[perm] == trace_of, np.roll(perm, 1), perm)
    moved = _fit_features(units, perm, R, P, N, U, rtop, rw, utop, uw)
    predict = _logistic(np.vstack([real, moved]), np.r_[np.zeros(m), np.ones(m)])
    p_moved = predict(moved)
    threshold = float(np.quantile(p_moved, SWAP_QUANTILE))
    for i, (u, p, f) in enumerate(zip(units, predict(real), real)):
        u["p_moved"], u["threshold"] = float(p), threshold
        # what this turn would score holding unit perm[i]'s message (for other calibrations)
        u["moved_from"], u["p_moved_if_moved"] = int(perm[i]), float(p_moved[i])
        u["reply_fit"] = float(f[2])
    return units


def turn_level(ctx: CheckContext) -> list[dict]:
    out = []
    for u in swap_scores(ctx):
        if u["p_moved"] < u["threshold"]:
            continue
        reasons = [f"it fits here no better than most messages moved in from other"
                   f" conversations (score {u['p_moved']:.2f} >= {u['threshold']:.2f}; the"
                   f" turns around it fit {(u['prev_fit'] + u['next_fit']) / 2:.2f}, it answers"
                   f" the user turn before it {u['reply_fit']:.2f})"]
        if u["foreign"]:
            reasons.append("mentions things this conversation never did: "
                           + ", ".join(u["foreign"][:5]))
        out.append(flag(u["trace"], u["idx"], NAME, "error",
                        "message does not fit this conversation: " + "; ".join(reasons)))
    return out


def run(ctx: CheckContext) -> list[dict]:
    return trace_level(ctx) + turn_level(ctx)
