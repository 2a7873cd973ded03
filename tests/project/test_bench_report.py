"""The one writer of BENCHMARKS.md sections that every bench uses."""

from __future__ import annotations

from bench import report


def test_sections_and_subsections_are_replaced_in_place(tmp_path, monkeypatch):
    path = tmp_path / "BENCHMARKS.md"
    monkeypatch.setattr(report, "BENCHMARKS", path)
    report.write_section("A", "first")
    report.write_section("B", "bee")
    report.write_subsection("A", "part 1", "one", how=" by `x --part 1`")
    assert "by `x --part 1`._" in path.read_text()
    report.write_subsection("A", "part 2", "two")
    report.write_subsection("A", "part 1", "one again")
    text = path.read_text()
    assert text.count("## A\n") == 1 and text.count("### part 1\n") == 1
    assert "one again" in text and "\none\n" not in text and "two" in text
    assert text.index("## A") < text.index("### part 2") < text.index("## B")   # stays in A
    assert text.count("_Measured ") == 4      # each part dated by its own run
    report.write_section("A", "rewritten")        # the whole section, subsections included
    text = path.read_text()
    assert "rewritten" in text and "### part" not in text and "bee" in text
    report.write_subsection("C", "only", "new section made")
    assert path.read_text().rstrip().endswith("new section made")
