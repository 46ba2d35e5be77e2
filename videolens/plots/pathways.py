"""The figure of an effective-pathway run: accuracy per task and condition, and the answer's
probability per layer (``videolens.pathways.evaluate`` gives the numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["plot_summary", "plot_frontier"]


def plot_summary(records: List[Dict[str, Any]], rows: List[Dict[str, Any]], path: Path | str,
                 title: Optional[str] = None) -> Path:
    """PNG with two panels: accuracy per task and condition (edges kept in the legend), and the
    mean fraction of edges kept in each layer per condition."""
    import numpy as np
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    fig = Figure(figsize=(12, 4.5))  # no pyplot: the caller's backend (a notebook's) is left as it is
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
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
    return _save(fig, path)


def _save(fig, path: Path | str) -> Path:
    """Lay out and write the PNG (folders made); returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_frontier(rows: List[Dict[str, Any]], path: Path | str, title: Optional[str] = None) -> Path:
    """PNG: accuracy (95% Wilson interval) against the percentage of edges kept, one point per spec
    (``videolens.pathways.frontier`` rows), the random control of each spec's edge count beside it
    (joined to its spec by a dotted line), the full model as a line, as in the paper's Finding 4 table."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.8))  # no pyplot: the caller's backend is left as it is
    ax = fig.subplots()
    full = next((r for r in rows if r["kind"] == "full"), None)
    if full is not None:
        ax.axhline(full["accuracy"], color="0.3", lw=1, ls="--", label=f"full causal ({full['accuracy']:.1f}%)")
    markers = {"discovered": "o", "shipped": "*", "random": "x"}
    kinds = list(dict.fromkeys(r["kind"] for r in rows if r["kind"] != "full"))
    placed: List[tuple] = []
    for kind in kinds:
        pts = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["kept_fraction"])
        xs = [100 * r["kept_fraction"] for r in pts]
        ys = [r["accuracy"] for r in pts]
        err = [[r["accuracy"] - r["ci_low"] for r in pts], [r["ci_high"] - r["accuracy"] for r in pts]]
        ax.errorbar(xs, ys, yerr=err, fmt=markers.get(kind, "s"), ms=9 if kind == "shipped" else 6, capsize=3,
                    ls="-" if kind == "discovered" else "none", label=kind)
        if kind != "random":
            placed += [(r["spec"], 100 * r["kept_fraction"], r["accuracy"]) for r in pts]
    by_spec = {r["spec"]: r for r in rows}
    for r in rows:
        if r["kind"] == "random":
            base = by_spec.get(r["spec"][len("random ("):-1])
            if base is not None:
                ax.plot([100 * base["kept_fraction"]] * 2, [base["accuracy"], r["accuracy"]], ":", color="0.6", lw=1)
    ax.set_xlabel("edges kept (%)")
    ax.set_ylabel("accuracy (%)")
    x0 = max(0.0, 100 * min(r["kept_fraction"] for r in rows) - 10)
    label_y = 104.0
    for name, x, y in sorted(placed, key=lambda p: -p[2]):  # labels in a column at the right, none overlapping
        label_y = min(y, label_y - 5.5)
        ax.annotate(name, (x, y), xytext=(101.5, label_y), textcoords="data", fontsize=7, va="center",
                    arrowprops={"arrowstyle": "-", "color": "0.7", "lw": 0.6})
    ax.set_ylim(0, 105)
    ax.set_xlim(x0, 100 + 0.45 * (100 - x0) + 12)
    ax.set_xticks([t for t in ax.get_xticks() if x0 <= t <= 100])
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "edges kept vs accuracy")
    return _save(fig, path)
