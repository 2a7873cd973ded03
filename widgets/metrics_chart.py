"""A small grouped bar chart of evaluation metrics per run (plotext through textual-plotext).
No I/O: `show(runs)` gets the runs as `workbench.evaluation.results.runs_per_model` gives them."""

from __future__ import annotations

from rich.text import Text
from textual_plotext import PlotextPlot

from workbench.core.safe_text import visible

METRIC_LABELS = (("staged_tool_call", "staged"), ("tool_call_equivalence", "equiv"),
                 ("function_match", "function"), ("rouge_l", "rouge_l"),
                 ("llm_as_a_judge", "judge"))
MAX_RUNS = 6
# one colour per run, the same in the bars and in the legend beside them (plotext draws its
# own legend inside the plot, over the bars)
COLORS = ("blue", "green", "red", "cyan", "magenta", "yellow")


def run_label(run: dict, width: int = 14) -> str:
    """`#ID model`, with the model name's control characters spelled out (plotext output is
    read as ANSI text: a raw escape in a name would reach the terminal)."""
    name = visible(run["model"] or "")
    if len(name) > width:
        name = name[: width - 1] + "…"
    return f"#{run['id']} {name}"


class MetricsChart(PlotextPlot):
    DEFAULT_CSS = "MetricsChart { height: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shown: list[tuple[str, list[float]]] = []   # (run label, values): what is drawn
        self.metric_labels: list[str] = []

    def show(self, runs: list[dict]) -> None:
        """The newest finished runs (at most MAX_RUNS), one bar per metric each."""
        done = [r for r in runs if r["status"] == "succeeded" and r["metrics"]]
        done = sorted(done, key=lambda r: r["id"], reverse=True)[:MAX_RUNS]
        keys = [(k, label) for k, label in METRIC_LABELS
                if any(k in r["metrics"] for r in done)]
        self.shown = [(run_label(r), [float(r["metrics"].get(k) or 0.0) for k, _ in keys])
                      for r in reversed(done)]
        self.metric_labels = [label for _, label in keys]
        self.refresh()

    def legend(self) -> Text:
        """Which colour is which run, for a line outside the plot."""
        out = Text()
        for (label, _), color in zip(self.shown, COLORS):
            out.append("██ ", style=color)
            out.append(label + "  ")
        return out

    def render(self):
        """Draw from the data at every render: plotext keeps state between builds, and a
        figure drawn once at another size came out different (unstable snapshots)."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("metrics per run")
        if self.shown:
            # horizontal: plotext places vertical bars' x labels in an order that depends on
            # string hashing, so the same data drew differently from one process to the next
            plt.multiple_bar(self.metric_labels, [v for _, v in self.shown],
                             color=list(COLORS[:len(self.shown)]), orientation="horizontal")
            plt.xlim(0, 1)
        return super().render()
