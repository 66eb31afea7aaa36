"""The article's plot, drawn by matplotlib as a standalone, accessible SVG. Pure."""

from __future__ import annotations

import io
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from markupsafe import Markup

from job.runfolder import BASELINE_NAMES

# ---------------------------------------------------------------------------------------
# The chart


def error_chart_svg(
    history: Sequence[Mapping[str, Any]],
    baseline_name: str | None = None,
    baseline_mae: float | None = None,
) -> str:
    """The article's plot: training and validation MAE per epoch, the best baseline dotted.

    Pure: numbers in, a standalone SVG document out (with a ``<title>`` and ``role="img"``
    for screen readers). Text stays text (``svg.fonttype = none``) so it is crisp, selectable
    and scales with the page.
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row["epoch"]) for row in history]
    series = [
        (key, label, color, marker)
        for key, label, color, marker in (
            ("mae", "Training MAE", "#1f5fa8", "o"),
            ("val_mae", "Validation MAE", "#c2410c", "s"),
        )
        if history and all(_finite(row.get(key)) for row in history)
    ]
    settings: dict[Any, Any] = {
        "svg.fonttype": "none",
        "svg.hashsalt": "movielens-site",  # stable ids: same input, same bytes
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
        # Sized for a phone: the figure is 5.2 in wide (500 CSS px), so at a phone's 360 px
        # a 13 pt label still renders near 12 px; on a desktop it is shown at about natural size.
        "font.size": 13,
        "axes.titlesize": 15,
        "axes.labelsize": 14,
        "legend.fontsize": 13,
    }
    with matplotlib.rc_context(settings):
        # Figure() directly, never pyplot: no global state and no GUI backend, just Agg/SVG.
        figure = Figure(figsize=(5.2, 4.4), layout="constrained")
        axes = figure.subplots()
        for key, label, color, marker in series:
            values = [float(row[key]) for row in history]
            axes.plot(epochs, values, label=label, color=color, marker=marker, linewidth=2)
        if baseline_mae is not None and _finite(baseline_mae):
            axes.axhline(
                float(baseline_mae),
                color="#404040",
                linestyle=":",
                linewidth=2,
                label=f"Best baseline: {baseline_name} ({baseline_mae:.3f})",
            )
        if not series:
            axes.text(
                0.5, 0.5, "No training history", ha="center", va="center", transform=axes.transAxes
            )
        axes.set_title("Error over epochs")
        axes.set_xlabel("Epoch")
        axes.set_ylabel("Mean absolute error (stars)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:
            axes.set_xlim(epochs[0] - 1, epochs[0] + 1)
        axes.grid(True, color="#dddddd", linewidth=0.8)
        axes.spines[["top", "right"]].set_visible(False)
        if series or baseline_mae is not None:
            # Below the axes, so it never hides a curve whatever the numbers.
            figure.legend(loc="outside lower center", ncols=1, frameon=False)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    title = chart_description(history, baseline_name, baseline_mae)
    return _label_svg(buffer.getvalue(), title)


def chart_description(
    history: Sequence[Mapping[str, Any]], baseline_name: str | None, baseline_mae: float | None
) -> str:
    """One sentence that says what the chart shows, for its ``<title>``."""
    parts = ["Error over epochs."]
    if history:
        first, last = history[0], history[-1]
        for key, label in (("mae", "Training"), ("val_mae", "Validation")):
            if _finite(first.get(key)) and _finite(last.get(key)):
                parts.append(
                    f"{label} MAE went from {float(first[key]):.3f} at epoch {first['epoch']} "
                    f"to {float(last[key]):.3f} at epoch {last['epoch']}."
                )
    if baseline_mae is not None and _finite(baseline_mae):
        parts.append(
            f"The best baseline ({baseline_name}) has MAE {baseline_mae:.3f} (dotted line)."
        )
    return " ".join(parts)


def _finite(value: Any) -> bool:
    """A real number, not NaN or infinite (numpy scalars and DECIMAL values included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        return False
    return math.isfinite(float(value))


def _label_svg(svg: str, title: str) -> str:
    """Add ``role="img"``, an ``aria-labelledby`` and a ``<title>`` to matplotlib's SVG root."""
    from xml.sax.saxutils import escape

    match = re.search(r"<svg\b[^>]*>", svg)
    if match is None:
        raise ValueError("matplotlib produced no <svg> element")
    root = match.group(0)
    labelled = root[:-1] + ' role="img" aria-labelledby="chart-title">'
    return (
        svg[: match.start()]
        + labelled
        + f'\n <title id="chart-title">{escape(title)}</title>'
        + svg[match.end() :]
    )


def inline_svg(svg: str) -> Markup:
    """The SVG element alone (no XML prolog or doctype), marked safe for the template.

    Safe because matplotlib escapes every text it writes, and our own ``<title>`` is escaped.
    """
    start = svg.index("<svg")
    return Markup(svg[start:])


def best_baseline(metrics: Sequence[Mapping[str, Any]]) -> tuple[str, float] | None:
    """The baseline with the lowest MAE (the dotted line of the article's plot)."""
    rows = [r for r in metrics if r.get("model") in BASELINE_NAMES and _finite(r.get("mae"))]
    if not rows:
        return None
    best = min(rows, key=lambda r: float(r["mae"]))
    return str(best["model"]), float(best["mae"])
