"""The NIAH depth x length accuracy grid and its heat map (depth on the y axis, context length on the
x axis, red = missed, green = found, as the V-NIAH / MM-NIAH papers draw it)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def niah_grid(results: Sequence, correct: str = "correct", depth_key: str = "depth",
              length_key: str = "frames") -> tuple[list[float], list, np.ndarray]:
    """Accuracy per (depth, length).

    Args:
        results: objects with `.metadata` and a bool attribute `correct` (`ItemResult`, or
            `ComparisonRow` with correct="dense_correct" / "sparse_correct").
    Returns sorted depths, sorted lengths and float64 `(len(depths), len(lengths))` accuracies (NaN
    where no item has that pair)."""
    if not results:
        raise ValueError("results: empty")
    cells: dict[tuple, list[bool]] = {}
    for r in results:
        meta = r.metadata
        if depth_key not in meta or length_key not in meta:
            raise ValueError(f"results: item {getattr(r, 'item_id', r)!r} has no {depth_key!r} / {length_key!r} "
                             f"metadata (not a NIAH item)")
        cells.setdefault((meta[depth_key], meta[length_key]), []).append(bool(getattr(r, correct)))
    depths = sorted({d for d, _ in cells})
    lengths = sorted({n for _, n in cells})
    grid = np.full((len(depths), len(lengths)), np.nan)
    for (d, n), hits in cells.items():
        grid[depths.index(d), lengths.index(n)] = sum(hits) / len(hits)
    return depths, lengths, grid


def plot_niah_heatmap(results: Sequence, correct: str = "correct", title: Optional[str] = None, ax=None,
                      depth_key: str = "depth", length_key: str = "frames"):
    """Draws `niah_grid` as a heat map with the accuracy written in each cell; returns the figure."""
    import matplotlib.pyplot as plt

    depths, lengths, grid = niah_grid(results, correct, depth_key, length_key)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.7 * len(lengths), 1.0 + 0.45 * len(depths)))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{100 * d:.0f}%" for d in depths])
    ax.set_xlabel(length_key)
    ax.set_ylabel(f"needle {depth_key}")
    for i in range(len(depths)):
        for j in range(len(lengths)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.figure.colorbar(image, ax=ax, label="accuracy")
    if title:
        ax.set_title(title)
    return ax.figure
