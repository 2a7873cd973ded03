"""Convert public corpora of other agents into held-out OpenAI chat JSONL (tests/data/heldout/).

A stand-alone maintenance script like bench/corpus_convert.py (workbench never imports it): it
reads the upstream files from a bare git snapshot (`git --git-dir=... show REV:path`), so the
output is reproducible from the commit named in each corpus's ATTRIBUTION.md. Nothing is tuned
on these corpora: the whole of each is held out (one `conversations.jsonl`, no tune half).

    python bench/heldout_convert.py sgd --git-dir /path/to/dstc8-schema-guided-dialogue.git \
        --out tests/data/heldout/sgd-services
    python bench/heldout_convert.py tooltalk --git-dir /path/to/ToolTalk.git \
        --out tests/data/heldout/tooltalk
    python bench/heldout_convert.py taskmaster-coffee --git-dir /path/to/Taskmaster.git \
        --out tests/data/heldout/taskmaster-coffee
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import subprocess
from pathlib import Path

from bench.corpus_convert import git_paths, git_show

SGD_SEED = 31          # which dialogues of the split are kept
SGD_CONVERSATIONS = 300


def write_corpus(out: Path, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "conversations.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{out}: {len(rows)} conversations")


def readable(git_dir: str, rev: str, path: str) -> bool:
    """Whether the snapshot holds the blob (a mirror may lack its largest files)."""
    r = subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "-e", f"{rev}:{path}"],
                       capture_output=True)
    return r.returncode == 0


# --- Schema-Guided Dialogue (google-research-datasets/dstc8-schema-guided-dialogue) -----------

def sgd_tools(services: list[dict]) -> tuple[list[dict], dict[tuple[str, str], str]]:
    """One OpenAI function tool per intent of each service: the intent's required and optional
    slots as string parameters (categorical slots with their possible values as an enum). An
    intent name that several services share gets its service's name in front."""
    count: dict[str, int] = {}
    for s in services:
        for it in s["intents"]:
            count[it["name"]] = count.get(it["name"], 0) + 1
    tools, names = [], {}
    for s in services:
        slots = {x["name"]: x for x in s["slots"]}
        for it in s["intents"]:
            name = it["name"] if count[it["name"]] == 1 else f"{s['service_name']}_{it['name']}"
            names[(s["service_name"], it["name"])] = name
            props = {}
            for slot in [*it["required_slots"], *it["optional_slots"]]:
                sl = slots[slot]
                props[slot] = {"type": "string", "description": sl["description"]}
                if sl["is_categorical"]:
                    props[slot]["enum"] = list(sl["possible_values"])
            tools.append({"type": "function", "function": {
                "name": name, "description": f"{s['description']}: {it['description']}",
                "parameters": {"type": "object", "properties": props,
                               "required": list(it["required_slots"])}}})
    return tools, names


def sgd_messages(dialogue: dict, names: dict[tuple[str, str], str]) -> list[dict]:
    """User turns as they are; a system turn whose frames call a service becomes one assistant
    message with those calls (method and parameters), one tool message per call holding the
    service's results as JSON, then the system's utterance as the assistant's text reply."""
    msgs: list[dict] = []
    n = 0
    for turn in dialogue["turns"]:
        if turn["speaker"] == "USER":
            msgs.append({"role": "user", "content": turn["utterance"]})
            continue
        calls, results = [], []
        for frame in turn["frames"]:
            if "service_call" not in frame:
                continue
            sc = frame["service_call"]
            call_id = f"call_{dialogue['dialogue_id']}_{n}"
            n += 1
            calls.append({"id": call_id, "type": "function", "function": {
                "name": names[(frame["service"], sc["method"])],
                "arguments": json.dumps(sc["parameters"], ensure_ascii=False)}})
            results.append({"role": "tool", "tool_call_id": call_id,
                            "content": json.dumps(frame.get("service_results", []),
                                                  ensure_ascii=False)})
        if calls:
            msgs.append({"role": "assistant", "content": None, "tool_calls": calls})
            msgs.extend(results)
        msgs.append({"role": "assistant", "content": turn["utterance"]})
    return msgs


def convert_sgd(git_dir: str, rev: str, out: Path, split: str = "test",
                exclude_prefix: str = "Restaurants") -> None:
    """`SGD_CONVERSATIONS` dialogues of the split, drawn with a fixed seed from those that use
    no service named `exclude_prefix*` (the TFT benchmark is made of SGD's restaurant dialogues);
    the task file (job_description.json) declares the tools of all the split's other services,
    which every conversation was offered."""
    files = [p for p in git_paths(git_dir, rev, f"{split}/")
             if Path(p).name.startswith("dialogues_") and readable(git_dir, rev, p)]
    schema = json.loads(git_show(git_dir, rev, f"{split}/schema.json"))
    services = [s for s in schema if not s["service_name"].startswith(exclude_prefix)]
    tools, names = sgd_tools(services)
    pool = []
    for path in files:
        for d in json.loads(git_show(git_dir, rev, path)):
            if not any(s.startswith(exclude_prefix) for s in d["services"]):
                pool.append((path, d))
    pool.sort(key=lambda x: x[1]["dialogue_id"])
    picked = sorted(random.Random(SGD_SEED).sample(pool, SGD_CONVERSATIONS),
                    key=lambda x: x[1]["dialogue_id"])
    rows = [{"messages": sgd_messages(d, names),
             "meta": {"source": "google-research-datasets/dstc8-schema-guided-dialogue",
                      "file": path, "dialogue_id": d["dialogue_id"], "services": d["services"]}}
            for path, d in picked]
    write_corpus(out, rows)
    # the tools (about 24 k characters) once, as the task, rather than on each of 300 lines
    task = {"task_description": "An assistant with these services: " + "; ".join(
        f"{s['service_name']}: {s['description']}" for s in services) + ".", "tools": tools}
    (out / "job_description.json").write_text(json.dumps(task, indent=1, ensure_ascii=False)
                                              + "\n", encoding="utf-8")
    print(f"read {len(files)} files: {' '.join(Path(f).name for f in files)}; pool {len(pool)}")


# --- ToolTalk (microsoft/ToolTalk) ---------------------------------------------------------

TOOLTALK_SYSTEM = ("You are a helpful assistant. Here is some user data:\nlocation: {location}"
                   "\ntimestamp: {timestamp}\nusername (if logged in): {username}")
TOOLTALK_APIS = "src/tooltalk/apis"


def tooltalk_apis(git_dir: str, rev: str) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """The API classes' literal `description`, `parameters`, `requires_auth` and the suites'
    API lists, read from the source with `ast` (nothing of ToolTalk is run)."""
    apis, suites = {}, {}
    for path in git_paths(git_dir, rev, TOOLTALK_APIS + "/"):
        if not path.endswith(".py"):
            continue
        for node in ast.parse(git_show(git_dir, rev, path)).body:
            if not isinstance(node, ast.ClassDef):
                continue
            attrs = {}
            for st in node.body:
                if isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(
                        st.targets[0], ast.Name):
                    key = st.targets[0].id
                    if key == "apis" and isinstance(st.value, ast.List):
                        attrs[key] = [e.id for e in st.value.elts if isinstance(e, ast.Name)]
                    elif key in ("name", "description", "parameters", "requires_auth"):
                        attrs[key] = ast.literal_eval(st.value)
            if "apis" in attrs:
                suites[attrs["name"]] = attrs["apis"]
            elif "parameters" in attrs:
                apis[node.name] = attrs
    return apis, suites


def tooltalk_tool(name: str, api: dict) -> dict:
    """ToolTalk's own `to_openai_doc` with `required` inside the parameters (JSON Schema)."""
    props = {k: {kk: vv for kk, vv in v.items() if kk != "required"}
             for k, v in api["parameters"].items()}
    return {"type": "function", "function": {
        "name": name, "description": api["description"],
        "parameters": {"type": "object", "properties": props,
                       "required": [k for k, v in api["parameters"].items() if v.get("required")]}}}


def tooltalk_messages(conv: dict, apis: dict[str, dict], key: str) -> list[dict]:
    """ToolTalk's OpenAI history: the system prompt of its evaluator, then per assistant turn
    each API call (one call a message, as ToolTalk's evaluator replays them) followed by its
    `{"response", "exception"}` result, then the assistant's text. The `session_token` argument
    of the APIs that require a login is dropped: ToolTalk's executor injects it, the model never
    writes it and no tool declares it."""
    meta = conv["metadata"]
    msgs: list[dict] = [{"role": "system", "content": TOOLTALK_SYSTEM.format(
        location=meta["location"], timestamp=meta["timestamp"], username=meta.get("username"))}]
    n = 0
    for turn in conv["conversation"]:
        if turn["role"] == "user":
            msgs.append({"role": "user", "content": turn["text"]})
            continue
        for call in turn.get("apis") or []:
            name = call["request"]["api_name"]
            params = dict(call["request"]["parameters"] or {})
            if apis[name].get("requires_auth"):
                params.pop("session_token", None)
            call_id = f"call_{key}_{n}"
            n += 1
            msgs.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": call_id, "type": "function",
                "function": {"name": name, "arguments": json.dumps(params, ensure_ascii=False)}}]})
            msgs.append({"role": "tool", "tool_call_id": call_id, "content": json.dumps(
                {"response": call["response"], "exception": call["exception"]},
                ensure_ascii=False)})
        msgs.append({"role": "assistant", "content": turn["text"]})
    return msgs


def convert_tooltalk(git_dir: str, rev: str, out: Path) -> None:
    """Every conversation of `data/tooltalk` and `data/easy`; tools: all APIs of the suites the
    conversation uses (as ToolTalk's evaluator offers them)."""
    apis, suites = tooltalk_apis(git_dir, rev)
    rows = []
    for sub in ("tooltalk", "easy"):
        for path in sorted(git_paths(git_dir, rev, f"data/{sub}/")):
            conv = json.loads(git_show(git_dir, rev, path))
            key = conv["conversation_id"][:8]
            tools = [tooltalk_tool(a, apis[a]) for s in conv["suites_used"] for a in suites[s]]
            rows.append({"messages": tooltalk_messages(conv, apis, key), "tools": tools,
                         "meta": {"source": "microsoft/ToolTalk", "file": path, "subset": sub,
                                  "name": conv["name"], "conversation_id": conv["conversation_id"],
                                  "user_id": conv["user"]["username"]}})
    write_corpus(out, rows)


# --- Taskmaster-4 coffee ordering (google-research-datasets/Taskmaster, TM-4-2024) ----------

TM4 = "TM-4-2024/data"
TM4_CONVERSATIONS = 300


def _json_type(v) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(v), "string")


def tm4_calls(utterance: dict) -> list[tuple[str, object, str]]:
    """The API calls annotated on an utterance, in order: (name, request, response text). A
    request is parsed JSON where it parses, else its text as written; a call without one has {}."""
    parts: dict[str, dict] = {}
    for a in utterance.get("annotations") or []:
        ctx = a.get("context", "")
        key = ctx.rsplit("_", 1)[-1]
        parts.setdefault(key, {})[a["name"]] = a["value"]
    out = []
    for key in sorted(parts, key=lambda k: int(k) if k.isdigit() else 0):
        p = parts[key]
        if "api_call" not in p:
            continue
        try:
            req = json.loads(p.get("request") or "{}")
        except ValueError:
            req = p["request"]
        out.append((p["api_call"], req, p.get("response", "")))
    return out


def tm4_tools(dialogs: list[dict]) -> list[dict]:
    """No schema is published with TM-4: each API's parameters are inferred from every call of
    the whole corpus (the JSON type each argument was given; required = the arguments every
    call of that API has)."""
    seen: dict[str, list[dict]] = {}
    for d in dialogs:
        for u in d["utterances"]:
            for name, req, _ in tm4_calls(u):
                seen.setdefault(name, [])
                if isinstance(req, dict):   # a request that is not JSON says nothing of types
                    seen[name].append(req)
    tools = []
    for name in sorted(seen):
        calls = seen[name]
        props: dict[str, dict] = {}
        for c in calls:
            for k, v in c.items():
                props.setdefault(k, {"type": _json_type(v)})
        required = [k for k in props if all(k in c for c in calls)]
        tools.append({"type": "function", "function": {
            "name": name, "description": "",
            "parameters": {"type": "object", "properties": props, "required": required}}})
    return tools


def tm4_messages(dialog: dict) -> list[dict]:
    """Each utterance as a user or assistant text message; the calls annotated on a user
    utterance follow it, one call a message and its response as the tool message (they are
    dependent: an order is created, then items are added to it)."""
    msgs: list[dict] = []
    n = 0
    key = dialog["conversation_id"].removeprefix("dlg-")[:8]
    for u in dialog["utterances"]:
        role = "user" if u["speaker"] == "user" else "assistant"
        msgs.append({"role": role, "content": u["text"]})
        for name, req, resp in tm4_calls(u):
            call_id = f"call_{key}_{n}"
            n += 1
            args = json.dumps(req, ensure_ascii=False) if isinstance(req, dict) else req
            msgs.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]})
            msgs.append({"role": "tool", "tool_call_id": call_id, "content": resp})
    return msgs


def convert_tm4(git_dir: str, rev: str, out: Path) -> None:
    """`TM4_CONVERSATIONS` coffee-ordering dialogs drawn with a fixed seed from all of TM-4's."""
    files = [p for p in git_paths(git_dir, rev, f"{TM4}/") if p.endswith(".json")]
    pool = [(path, d) for path in files for d in json.loads(git_show(git_dir, rev, path))]
    pool.sort(key=lambda x: x[1]["conversation_id"])
    tools = tm4_tools([d for _, d in pool])
    picked = sorted(random.Random(SGD_SEED).sample(pool, TM4_CONVERSATIONS),
                    key=lambda x: x[1]["conversation_id"])
    rows = [{"messages": tm4_messages(d), "tools": tools,
             "meta": {"source": "google-research-datasets/Taskmaster", "file": path,
                      "conversation_id": d["conversation_id"], "scenario": d["scenario"]}}
            for path, d in picked]
    write_corpus(out, rows)
    print(f"pool {len(pool)} dialogs from {len(files)} files; {len(tools)} tools")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", choices=["sgd", "tooltalk", "taskmaster-coffee"])
    ap.add_argument("--git-dir", required=True)
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if a.corpus == "sgd":
        convert_sgd(a.git_dir, a.rev, a.out)
    elif a.corpus == "tooltalk":
        convert_tooltalk(a.git_dir, a.rev, a.out)
    else:
        convert_tm4(a.git_dir, a.rev, a.out)


if __name__ == "__main__":
    main()
