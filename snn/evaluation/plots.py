"""The AEE-against-model-size plot of bit-width comparisons and the QAT ladder, with labels that do not collide."""

from __future__ import annotations

import math
from pathlib import Path

_SERIES_STYLE = {None: ("o", "tab:blue"), "progressive": ("s", "tab:green")}


# Label offsets from a point (in points), tried in this order: up-right, down-right, up-left,
# down-left, then the same further out. The text is aligned to grow away from the point.
_LABEL_OFFSETS = tuple(
    (sx * dx, sy * dy, "left" if sx > 0 else "right", "bottom" if sy > 0 else "top")
    for dx, dy in ((5, 4), (5, 14), (16, 4), (5, 24), (16, 24))
    for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1))
)


def _overlap_area(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _place_labels(fig, ax, rows: list[dict]) -> list:
    """Label each row's point with the first of ``_LABEL_OFFSETS`` that keeps the text inside the
    axes and clear of the labels placed so far, the legend and the markers (or, where none does,
    the offset with the least overlap). Highest point first, so of two close points the upper one
    gets the label above. Needs the final layout (call after ``tight_layout``). Returns the texts,
    in the order of ``rows`` (rows whose point is not finite get none).
    """
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer).padded(-2)
    points = [r for r in rows if math.isfinite(r["size_mb"]) and r["size_mb"] > 0 and math.isfinite(r["aee"])]
    half = 3 * fig.dpi / 72  # half a default scatter marker (6 pt across), in pixels
    obstacles = [
        Bbox.from_extents(x - half, y - half, x + half, y + half)
        for x, y in ax.transData.transform([(r["size_mb"], r["aee"]) for r in points]).reshape(-1, 2)
    ]
    if ax.get_legend() is not None:
        obstacles.append(ax.get_legend().get_window_extent(renderer))
    texts = {}
    for i in sorted(range(len(points)), key=lambda i: -points[i]["aee"]):
        r = points[i]
        text = ax.annotate(r["label"], (r["size_mb"], r["aee"]), xytext=(0, 0), textcoords="offset points", fontsize=8)
        text.set_in_layout(False)
        best = None
        for dx, dy, ha, va in _LABEL_OFFSETS:
            text.set(position=(dx, dy), ha=ha, va=va)
            box = text.get_window_extent(renderer)
            outside = box.width * box.height - _overlap_area(box, inside)
            cost = 10 * outside + sum(_overlap_area(box, o) for o in obstacles)
            if best is None or cost < best[0]:
                best = (cost, (dx, dy, ha, va), box)
            if cost == 0:
                break
        _, (dx, dy, ha, va), box = best
        text.set(position=(dx, dy), ha=ha, va=va)
        if (abs(dx), abs(dy)) != _LABEL_OFFSETS[0][:2]:  # further out: a thin leader line to the point
            leader = {"arrowstyle": "-", "color": "0.5", "lw": 0.6, "shrinkA": 0, "shrinkB": 3}
            ax.annotate("", (r["size_mb"], r["aee"]), xytext=(dx, dy), textcoords="offset points", arrowprops=leader)
        obstacles.append(box.padded(1))
        texts[i] = text
    return [texts[i] for i in range(len(points))]


def _aee_figure(rows: list[dict], title: str):
    """The figure of ``plot_aee_vs_size``, laid out and labelled: (figure, axes, label texts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for series in dict.fromkeys(r.get("series") for r in rows):
        marker, colour = _SERIES_STYLE.get(series, ("^", "tab:purple"))
        members = sorted((r for r in rows if r.get("series") == series), key=lambda r: r["size_mb"])
        ax.plot([r["size_mb"] for r in members], [r["aee"] for r in members], "-", color=colour, alpha=0.4)
        for r in members:
            ref = bool(r.get("reference"))
            ax.scatter(r["size_mb"], r["aee"], marker=marker, color="tab:orange" if ref else colour, zorder=3,
                       label="reference" if ref else None)  # fmt: skip
    zero = rows[0]["zero_flow_aee"]
    if zero is not None and math.isfinite(zero):
        ax.axhline(zero, color="gray", ls="--", lw=1, label=f"zero flow ({zero:.2f} px)")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.15)  # room for the labels of the outermost points
    # 0.5, 1, 2 rather than 5x10^-1; minor ticks labelled at 2 and 5 only, so labels do not collide.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else "")
    )
    ax.tick_params(axis="x", which="minor", labelsize=7)
    # Headroom above the highest point or zero-flow line, so labels above it stay below the title.
    heights = [v for v in [*(r["aee"] for r in rows), zero] if v is not None and math.isfinite(v) and v > 0]
    ax.set_ylim(0, 1.15 * max(heights) if heights else None)
    ax.set_xlabel("model size (MB, log scale)")
    ax.set_ylabel("AEE (px)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    labels = _place_labels(fig, ax, rows)
    return fig, ax, labels


def plot_aee_vs_size(rows: list[dict], path: str | Path, title: str = "AEE against model size") -> None:
    """One labelled point per row (``size_mb``, ``aee``, ``label``), log x axis, zero-flow AEE dashed.

    Points of one ``series`` (rows without one form the main series) are joined by a line in
    order of size; a row with ``reference`` true is drawn in orange. Labels are placed clear of
    each other and inside the axes (see ``_place_labels``).
    """
    fig, _, _ = _aee_figure(rows, title)
    import matplotlib.pyplot as plt

    fig.savefig(path)
    plt.close(fig)
