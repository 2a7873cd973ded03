"""Drawing a test split: which traces go to test, grouped so that one user's or one session's
conversations stay on one side (a model tested on a user it was trained on scores too well).

The draw is over groups (a trace without a value of the field is a group of its own), in an
order fixed by the seed, taking each group that still fits under the share; the test split only
grows: groups with a trace in test already stay there and count towards the share, so running
the same command again changes nothing (`split --undo` takes a draw back).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

SHARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def parse_share(text: str, total: int) -> int:
    """`10%`, `0.1` or `34` (traces) -> how many traces the test split should hold."""
    m = SHARE.match(str(text))
    if not m:
        raise ValueError(f"--test {text!r}: give a percentage (10%), a fraction (0.1) or a"
                         " number of traces (34)")
    value, pct = float(m.group(1)), m.group(2)
    if pct:
        fraction = value / 100
    elif value < 1:
        fraction = value
    else:
        if value != int(value):
            raise ValueError(f"--test {text!r}: a number of traces is a whole number")
        return int(value)
    if not 0 < fraction < 1:
        raise ValueError(f"--test {text!r}: the share must be above 0% and below 100%")
    return max(1, round(fraction * total))


@dataclass
class Draw:
    test: set[int] = field(default_factory=set)
    train: set[int] = field(default_factory=set)
    groups_test: int = 0
    groups: int = 0


def draw(values: dict[int, str | None], in_test: set[int], target: int, seed: int) -> Draw:
    """Split the traces of `values` (trace id -> group value) so that about `target` are in
    test, whole groups at a time; `in_test` are already there (their groups with them)."""
    groups: dict[str, list[int]] = {}
    for tid, value in sorted(values.items()):
        groups.setdefault(f"v:{value}" if value is not None else f"t:{tid}", []).append(tid)
    out = Draw(groups=len(groups))
    chosen = [k for k, ids in groups.items() if in_test.intersection(ids)]
    size = sum(len(groups[k]) for k in chosen)
    rest = sorted(k for k in groups if k not in chosen)
    random.Random(seed).shuffle(rest)
    for k in rest:
        if size >= target:
            break
        if size + len(groups[k]) <= target:
            chosen.append(k)
            size += len(groups[k])
    if size == 0 and target > 0 and rest:   # every group is larger than the share: the smallest
        k = min(rest, key=lambda g: (len(groups[g]), rest.index(g)))
        chosen.append(k)
    out.groups_test = len(chosen)
    for k in chosen:
        out.test.update(groups[k])
    out.train = set(values) - out.test
    return out
