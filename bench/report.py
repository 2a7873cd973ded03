"""Writing benchmark results into BENCHMARKS.md: one section per benchmark, replaced on rerun."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEach section is written by the script it names; rerun the script to refresh it.\n"


def default_data_dir() -> Path | None:
    """The shared benchmark data next to the checkout, when present (never needed by users)."""
    candidate = ROOT.parent / "shared" / "tft-benchmark"
    return candidate if candidate.exists() else None


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, Python {platform.python_version()}"


def stamp(how: str = "") -> str:
    """The line that dates a result: when, on what machine, and (optionally) by what command."""
    return f"_Measured {date.today().isoformat()} on {machine()}{how}._"


def _section_pattern(title: str) -> re.Pattern:
    return re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)


def write_section(title: str, body: str, *, how: str = "") -> None:
    """Replace (or append) the `## title` section of BENCHMARKS.md."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    section = f"## {title}\n\n{stamp(how)}\n\n{body.strip()}\n"
    pattern = _section_pattern(title)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    BENCHMARKS.write_text(text.rstrip("\n") + "\n")


def write_subsection(title: str, subtitle: str, body: str, *, how: str = "") -> None:
    """Replace (or append) the `### subtitle` part of the `## title` section, leaving the rest
    of the section as it is (a bench that reruns one of its parts)."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    part = f"### {subtitle}\n{stamp(how)}\n\n{body.strip()}\n"
    found = _section_pattern(title).search(text)
    if found is None:
        write_section(title, part, how=how)
        return
    section = found.group(0)
    sub = re.compile(rf"^### {re.escape(subtitle)}\n.*?(?=^### |\Z)", re.S | re.M)
    section = (sub.sub(lambda _: part + "\n", section) if sub.search(section)
               else section.rstrip("\n") + "\n\n" + part)
    text = text[:found.start()] + section.rstrip("\n") + "\n\n" + text[found.end():]
    BENCHMARKS.write_text(text.rstrip("\n") + "\n")


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "?"
