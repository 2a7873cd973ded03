"""What a flag says, the same in the app and on the command line: its plain sentence (the
detail), the reasons behind it, and the statistical detail (evidence of source "statistics")
apart, shown only when asked for; and, for a flag of a kind analysts marked as not a problem,
that they did. Plain strings: callers make them safe for their screen (`safe_text.visible`)."""

from __future__ import annotations

STATISTICS = "statistics"   # the evidence source of a flag's numbers (scores, thresholds, shares)


def reasons(flag: dict, stats: bool = False) -> tuple[list[dict], int]:
    """The flag's evidence to show (statistics only with `stats`), and how many statistical
    entries are hidden."""
    evidence = [e for e in flag.get("evidence") or () if isinstance(e, dict)]
    shown = [e for e in evidence if stats or e.get("source") != STATISTICS]
    return shown, len(evidence) - len(shown)


def taught_note(flag: dict) -> str | None:
    """"an analyst marked 3 like this as not a problem (error → warning)", or None."""
    n = flag.get("dismissed_like") or 0
    if not n:
        return None
    demoted = flag.get("demoted_from")
    return (f"an analyst marked {n} like this as not a problem"
            + (f" ({demoted} → {flag['severity']})" if demoted else ""))
