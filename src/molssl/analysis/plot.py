"""The t-SNE scatter PNG, drawn with matplotlib's Agg canvas (headless, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from molssl.analysis.groups import NO_GROUP, Grouping

__all__ = ["plot_continuous", "plot_groups"]

_GREY = (0.78, 0.78, 0.78, 0.6)
_POINT_SIZE = 9.0
_MAX_LEGEND_CHARS = 40


def _figure(title: str) -> tuple[Figure, object]:
    figure = Figure(figsize=(7.5, 6.0), dpi=150)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("t-SNE 1")
    axes.set_ylabel("t-SNE 2")
    axes.set_xticks([])
    axes.set_yticks([])
    return figure, axes


def _short(name: str) -> str:
    return name if len(name) <= _MAX_LEGEND_CHARS else name[: _MAX_LEGEND_CHARS - 1] + "…"


def plot_groups(
    coords: np.ndarray, grouping: Grouping, top_k: int, path: str | Path, title: str
) -> Path:
    """Scatter coloured by group: the ``top_k`` largest groups in colour, the rest grey.

    Args:
        coords: ``(M, 2)`` map.
        grouping: Groups, largest first (as :func:`~molssl.analysis.groups.group_by_value`
            orders them).
        top_k: Groups drawn in colour (at most 20, the colours of ``tab20``).
        path: PNG file to write.
        title: Figure title.
    """
    top_k = max(0, min(top_k, 20, len(grouping.names)))
    palette = colormaps["tab10" if top_k <= 10 else "tab20"]
    figure, axes = _figure(title)
    coloured = (grouping.assignment != NO_GROUP) & (grouping.assignment < top_k)
    rest = ~coloured
    if rest.any():
        axes.scatter(
            coords[rest, 0],
            coords[rest, 1],
            s=_POINT_SIZE,
            color=_GREY,
            linewidths=0,
            label=f"other ({int(rest.sum())})",
        )
    for group in range(top_k):
        members = grouping.assignment == group
        label = f"{_short(grouping.names[group] or '(acyclic)')} ({grouping.counts[group]})"
        axes.scatter(
            coords[members, 0],
            coords[members, 1],
            s=_POINT_SIZE,
            color=palette(group),
            linewidths=0,
            label=label,
        )
    axes.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)


def plot_continuous(
    coords: np.ndarray, values: np.ndarray, path: str | Path, title: str, label: str
) -> Path:
    """Scatter coloured by a continuous label (viridis, with a colour bar); NaN in grey."""
    figure, axes = _figure(title)
    missing = np.isnan(values)
    if missing.any():
        axes.scatter(
            coords[missing, 0],
            coords[missing, 1],
            s=_POINT_SIZE,
            color=_GREY,
            linewidths=0,
            label=f"missing ({int(missing.sum())})",
        )
        axes.legend(fontsize=6, loc="best", frameon=False)
    present = ~missing
    if present.any():
        points = axes.scatter(
            coords[present, 0],
            coords[present, 1],
            s=_POINT_SIZE,
            c=values[present],
            cmap="viridis",
            linewidths=0,
        )
        figure.colorbar(points, ax=axes, label=label)
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)
