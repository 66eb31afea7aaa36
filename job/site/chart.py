"""The article's plot, drawn by matplotlib as a standalone, accessible SVG. Pure."""

from __future__ import annotations

import io
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from markupsafe import Markup

from job.core.baselines import BASELINE_NAMES

# ---------------------------------------------------------------------------------------
# The chart


# The curves the chart can show: history column, legend label, colour, marker.
_ERROR_SERIES = (
    ("mae", "Training MAE", "#1f5fa8", "o"),
    ("val_mae", "Validation MAE", "#c2410c", "s"),
)
_ERROR_CHART_STYLE: dict[Any, Any] = {
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
        for key, label, color, marker in _ERROR_SERIES
        if history and all(_finite(row.get(key)) for row in history)
    ]
    with matplotlib.rc_context(_ERROR_CHART_STYLE):
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


# ---------------------------------------------------------------------------------------
# A movie's rating distribution

# Marks the places where one movie's numbers go into the drawing: "\0bar3\0", "\0count3\0".
_SLOT = re.compile("\x00([a-z]+)(\\d*)\x00")
_BAR_COLOR = "#b45309"  # the stars' colour in site.css


def star_label(value: float) -> str:
    """A rating as the chart's axis shows it: 3.5 -> "3½", 0.5 -> "½", 4.0 -> "4"."""
    whole, half = divmod(round(value * 2), 2)
    return (str(whole) if whole else "") + ("½" if half else "") or "0"


@dataclass(frozen=True)
class RatingChart:
    """A bar chart of how many users gave each rating, drawn by matplotlib once per render.

    Drawing one figure per movie would take minutes on a large catalogue, so matplotlib draws
    one: the axis, the labels and every bar at full height, each bar in a group with a known
    id. A movie's chart is that drawing with each bar scaled about the baseline to its count
    (an SVG ``transform``) and the counts written above the bars: microseconds per movie.
    """

    values: tuple[float, ...]  # the scale's ratings, one bar each
    pieces: tuple[str, ...]  # the SVG split at its slots: text, slot name, text, ...
    baseline: float  # the bars' bottom edge, in the SVG's user units

    @classmethod
    def draw(cls, values: Sequence[float]) -> RatingChart:
        import matplotlib
        from matplotlib.figure import Figure

        settings: dict[Any, Any] = {
            "svg.fonttype": "none",
            "svg.hashsalt": "movielens-ratings",
            "font.family": "sans-serif",
            "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
            "font.size": 12,
        }
        n = len(values)
        with matplotlib.rc_context(settings):
            figure = Figure(figsize=(4.4, 1.9))
            figure.patch.set_visible(False)
            axes = figure.add_axes((0.01, 0.18, 0.98, 0.62))
            axes.patch.set_visible(False)
            bars = axes.bar(range(n), [1.0] * n, width=0.78, color=_BAR_COLOR)
            for i, bar in enumerate(bars):
                bar.set_gid(f"\x00bar{i}\x00")
                bar.set_clip_on(False)
                # a placeholder matplotlib can lay out; replaced by the slot below
                axes.text(i, 1.05, f"#{i}#", ha="center", va="bottom", color="#1c1c1c")
            axes.set_xticks(range(n), [star_label(v) for v in values])
            axes.set_xlim(-0.6, n - 0.4)
            axes.set_ylim(0, 1)
            axes.set_yticks([])
            axes.tick_params(axis="x", length=0, colors="#1c1c1c")
            axes.spines[["top", "right", "left"]].set_visible(False)
            buffer = io.StringIO()
            figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
        svg, baseline = _bar_slots(_compact_svg(buffer.getvalue(), n), n)
        # role and title: a screen reader hears the numbers (one sentence per movie)
        svg = re.sub(
            r"<svg\b[^>]*>",
            lambda m: (
                m.group(0)[:-1]
                + ' role="img" aria-labelledby="ratings-title" class="ratings-chart">'
                + '<title id="ratings-title">\x00title\x00</title>'
            ),
            svg,
            count=1,
        )
        return cls(tuple(values), tuple(_SLOT.split(svg)), baseline)

    def render(self, counts: Sequence[int], title: str) -> Markup:
        """The chart of one movie: ``counts[i]`` users gave ``values[i]``; ``title`` names it."""
        from xml.sax.saxutils import escape

        if len(counts) != len(self.values):
            raise ValueError(f"{len(counts)} counts for {len(self.values)} ratings")
        top = max(counts) if counts else 0
        fill: dict[str, str] = {"title": escape(title)}
        for i, count in enumerate(counts):
            height = count / top if top else 0.0
            fill[f"bar{i}"] = f"matrix(1 0 0 {height:.4f} 0 {self.baseline * (1 - height):.3f})"
            fill[f"count{i}"] = f"{count:,}"
        # pieces alternate: text, name, number, text, name, number, ..., text
        parts = list(self.pieces)
        for k in range(1, len(parts), 3):
            parts[k] = fill[parts[k] + parts[k + 1]]
            parts[k + 1] = ""
        return Markup("".join(parts))


def _compact_svg(svg: str, n: int) -> str:
    """matplotlib's SVG made fit to inline in every movie page: one line, no ids, styles or
    metadata of its own, and the count placeholders of its ``n`` bars as slots."""
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)
    # its <style> ("*{stroke-linejoin: ...}") would apply to the whole page, inline
    svg = re.sub(r"\s*<defs>\s*<style[^>]*>[^<]*</style>\s*</defs>", "", svg)
    svg = re.sub(r"\s*\n\s*", " ", svg)  # one line: about half the bytes
    svg = re.sub(r">\s+<", "><", svg)
    # matplotlib's own ids (figure_1, text_3, ...) would clash with the page's or repeat
    svg = re.sub(r'<g id="[\w.]+">', "<g>", svg)
    # the page's font (site.css) rather than a list repeated on every label; no null rotations
    svg = re.sub(r"font-family: [^;\"]*;? ?", "", svg)
    svg = re.sub(r' transform="rotate\(-?0 [\d.]+ [\d.]+\)"', "", svg)
    # Two decimals of a point are plenty, and every label's style once, on the root: the
    # drawing is in every movie page, so its bytes count ten thousand times.
    svg = re.sub(r"(\d+\.\d\d)\d+", r"\1", svg)
    styles = set(re.findall(r'<text style="([^"]*)"', svg))
    if len(styles) == 1:
        svg = svg.replace(f' style="{styles.pop()}"', "")
        svg = re.sub(
            r"<svg\b", '<svg font-size="12px" text-anchor="middle" fill="#1c1c1c"', svg, count=1
        )
    for i in range(n):
        svg = svg.replace(f">#{i}#</text>", f">\x00count{i}\x00</text>")
    return svg


def _bar_slots(svg: str, n: int) -> tuple[str, float]:
    """Each bar's group as a ``transform`` slot; returns the SVG and the bars' shared bottom."""
    bottoms = []
    for i in range(n):
        # matplotlib writes the gid as the group's id: <g id="\0bar3\0"><path d="M x y ..."
        match = re.search(f'<g id="\x00bar{i}\x00">\\s*<path d="([^"]*)"', svg)
        if match is None:
            raise ValueError(f"matplotlib's SVG has no bar {i}")
        ys = [float(y) for y in re.findall(r"[ML] [-\d.]+ ([-\d.]+)", match.group(1))]
        bottoms.append(max(ys))  # SVG's y grows downwards: the bottom edge is the largest
        svg = svg.replace(f'<g id="\x00bar{i}\x00">', f'<g transform="\x00bar{i}\x00">')
    if len(set(bottoms)) != 1:
        raise ValueError(f"matplotlib's bars do not share a baseline: {bottoms}")
    return svg, bottoms[0]


def ratings_description(title: str, values: Sequence[float], counts: Sequence[int]) -> str:
    """ "How 12 users rated Heat (1995): 5 stars 4, 4½ stars 3, ..." (best rating first)."""
    total = sum(counts)
    parts = [
        f"{star_label(v)} star{'s' if v > 1 else ''} {c:,}"
        for v, c in sorted(zip(values, counts, strict=True), reverse=True)
        if c
    ]
    return f"How {total:,} user{'s' if total != 1 else ''} rated {title}: {', '.join(parts)}."
