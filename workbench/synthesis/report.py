"""What a synthesis job reached against its target: per topic and length bucket, per tool and
per argument value, beside the seeds, so an analyst sees what the synthetic set over- or
under-represents."""

from __future__ import annotations

from collections import Counter

from workbench.checks.base import calls_of
from workbench.synthesis.corpus import Knowledge, Topic, n_messages, value_text


def _share(n: int, total: int) -> float:
    return round(100.0 * n / total, 1) if total else 0.0


def _calls(convs: list[list[dict]], know: Knowledge) -> tuple[Counter, dict]:
    tools: Counter = Counter()
    values: dict[str, Counter] = {}
    for messages in convs:
        for m in messages:
            for name, args in calls_of(m):
                tools[name] += 1
                if not isinstance(args, dict) or not know.is_service(name):
                    continue
                for k, v in args.items():
                    s = value_text(v)
                    if s is not None:
                        values.setdefault(f"{name}.{k}", Counter())[s] += 1
    return tools, values


def distribution(accepted: list[tuple[str | None, list[dict]]], seeds: list[list[dict]],
                 topics: list[Topic], target: int, know: Knowledge) -> dict:
    """`accepted`: (topic, messages) of each accepted conversation."""
    n = len(accepted)
    by_topic = Counter(t for t, _ in accepted)
    per_topic = []
    for t in topics:
        want = target / len(topics)
        row = {"topic": t.text, "target": round(want, 1), "reached": by_topic[t.text],
               "target_share": _share(1, len(topics)), "share": _share(by_topic[t.text], n)}
        if t.lo is not None:
            row["bucket"] = f"{t.lo}-{t.hi} messages"
            row["in_bucket"] = sum(1 for _, m in accepted if t.fits(n_messages(m)))
            row["bucket_share"] = _share(row["in_bucket"], n)
        row["gap"] = round(row["share"] - row["target_share"], 1)
        per_topic.append(row)
    syn_tools, syn_values = _calls([m for _, m in accepted], know)
    seed_tools, seed_values = _calls(seeds, know)
    st, ss = sum(syn_tools.values()), sum(seed_tools.values())
    per_tool = [{"tool": name, "synthetic": syn_tools[name], "share": _share(syn_tools[name], st),
                 "seed_share": _share(seed_tools[name], ss)}
                for name in sorted(set(syn_tools) | set(seed_tools))]
    per_argument = []
    for key in sorted(set(syn_values) | set(seed_values)):
        syn, seed = syn_values.get(key, Counter()), seed_values.get(key, Counter())
        total = sum(syn.values())
        per_argument.append({
            "argument": key, "distinct": len(syn), "seed_distinct": len(seed),
            "new_values": len(set(syn) - set(seed)),
            "top": [{"value": v, "count": c, "share": _share(c, total)}
                    for v, c in syn.most_common(5)],
            "top_share": _share(syn.most_common(1)[0][1], total) if syn else 0.0})
    lengths = [n_messages(m) for _, m in accepted]
    return {"accepted": n, "target": target, "per_topic": per_topic, "per_tool": per_tool,
            "per_argument": per_argument,
            "messages": {"min": min(lengths, default=0), "max": max(lengths, default=0),
                         "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0.0}}
