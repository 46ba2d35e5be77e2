"""The figure of an effective-pathway run: accuracy per task and condition, and the answer's
probability per layer (``videolens.pathways.evaluate`` gives the numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["plot_summary"]


def plot_summary(records: List[Dict[str, Any]], rows: List[Dict[str, Any]], path: Path | str,
                 title: Optional[str] = None) -> Path:
    """PNG with two panels: accuracy per task and condition (edges kept in the legend), and the
    mean fraction of edges kept in each layer per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1.6, 1]})
    width = 0.8 / max(1, len(conds))
    x = np.arange(len(tasks))
    for i, c in enumerate(conds):
        acc = [next((r["accuracy"] for r in rows if r["task"] == t and r["condition"] == c), np.nan) for t in tasks]
        kept = next(r["edges_kept_text"] for r in rows if r["task"] == "overall" and r["condition"] == c)
        bars = ax1.bar(x + (i - (len(conds) - 1) / 2) * width, acc, width, label=f"{c}: {kept} edges kept")
        ax1.bar_label(bars, fmt="%.0f", fontsize=7)
    ax1.set_xticks(x, [t.replace("_", " ") for t in tasks], rotation=20, ha="right")
    ax1.set_ylabel("accuracy (%)")
    ax1.set_ylim(0, 100 + 12 * len(conds))  # room for the legend above the bars
    ax1.set_yticks(range(0, 101, 20))
    ax1.legend(fontsize=8, loc="upper left")
    ax1.set_title("accuracy per task")
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "d")]
    for i, c in enumerate(conds):
        per = [np.array(r["kept_per_layer"]) / (r["edges_full"] / r["n_layers"]) for r in records if r["condition"] == c]
        if per:
            ls, mk = styles[i % len(styles)]
            ax2.plot(100 * np.mean(per, 0), linestyle=ls, marker=mk, ms=4, label=c)
    ax2.set_xlabel("layer")
    ax2.set_ylabel("edges kept (%)")
    ax2.set_ylim(0, 105)
    ax2.set_title("edges kept per layer (sample mean)")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
