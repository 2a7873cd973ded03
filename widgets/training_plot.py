"""A training job's curves: loss, learning rate and tokens/s against the step, with the latest
values and the ETA in a line above. Drawn with plotext (textual-plotext); no I/O: `show()` gets
the points (`workbench.training.metrics_log.parse_metrics`)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from workbench.training.metrics_log import fmt_eta, summary


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class TrainingCurves(Vertical):
    DEFAULT_CSS = """
    TrainingCurves #train-summary { height: auto; padding: 0 1; background: $boost; }
    TrainingCurves #loss-plot { height: 2fr; }
    TrainingCurves #train-small { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.points: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Static(Text("no metrics logged yet"), id="train-summary")
        yield PlotextPlot(id="loss-plot")
        with Horizontal(id="train-small"):
            yield PlotextPlot(id="lr-plot")
            yield PlotextPlot(id="tps-plot")

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one metric, leaving out the steps that lack it."""
        pts = [(p["step"], p[key]) for p in self.points if p.get(key) is not None]
        return [s for s, _ in pts], [v for _, v in pts]

    def show(self, points: list[dict], head: Text | None = None) -> None:
        self.points = list(points)
        s = summary(self.points)
        line = Text()
        if head is not None:
            line.append_text(head)
            line.append("  ")
        line.append(f"step {_fmt(s['step'], 'd')}  loss {_fmt(s['loss'], '.4f')}"
                    f" (best {_fmt(s['best_loss'], '.4f')})  lr {_fmt(s['lr'], '.2e')}"
                    f"  {_fmt(s['tokens_per_s'], ',.0f')} tok/s  ETA {fmt_eta(s['eta_s'])}")
        if not self.points:
            line.append("  (no metrics logged yet)", style="dim")
        self.query_one("#train-summary", Static).update(line)
        for wid, key, title in (("#loss-plot", "loss", "loss"), ("#lr-plot", "lr", "learning rate"),
                                ("#tps-plot", "tokens_per_s", "tokens/s")):
            plot = self.query_one(wid, PlotextPlot)
            plt = plot.plt
            plt.clear_data()
            plt.clear_figure()
            plt.title(title)
            plt.xlabel("step")
            xs, ys = self.series(key)
            if xs:
                plt.plot(xs, ys, marker="braille")
            plot.refresh()
