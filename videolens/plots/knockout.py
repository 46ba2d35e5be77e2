"""Figures of knockout sweeps: the paper-style curve per target (``plot_target``) and several
models on one figure (``plot_models``, Finding 1). The numbers come from
``videolens.knockout.summary``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from ..knockout.summary import summarize

__all__ = ["plot_target", "plot_models", "plot_correct_incorrect", "is_correct", "VALUES"]

VALUES = {
    "rel_change": "relative change of p(baseline prediction) (%)",
    "rel_change_true": "relative change of p(true answer) (%)",
}


def plot_target(records: Iterable[dict], target: str, path=None, value: str = "rel_change",
                ax=None, title: Optional[str] = None, label: Optional[str] = None, linestyle: str = "-"):
    """The paper-style figure of one target: mean relative change per centre layer, a line per
    pair, 95% interval band.

    Args:
        records: sweep records (any targets; only ``target`` 's are drawn).
        target: target name.
        path: save the figure here (PNG, 150 dpi) when given.
        value: ``"rel_change"`` (baseline answer, default) or ``"rel_change_true"`` (ground truth).
        ax: draw into this matplotlib Axes (default: a new figure).
        label: prefix of every line's legend entry (e.g. the model's name, for comparisons).
        linestyle: matplotlib line style of this call's lines.

    Returns:
        the matplotlib Figure.

    Raises:
        ValueError: unknown ``value``, or no records of ``target``.
    """
    if value not in VALUES:
        raise ValueError(f"value must be one of {sorted(VALUES)}, got {value!r}")
    rows = [r for r in records if r["target"] == target]
    if not rows:
        raise ValueError(f"no records of target {target!r}")
    suffix = "" if value == "rel_change" else "_true"
    summary = summarize(rows)
    by_pair: Dict[str, List[dict]] = defaultdict(list)
    for s in summary:
        by_pair[s["pair"]].append(s)
    if ax is None:
        from matplotlib.figure import Figure  # no pyplot state: safe in loops and headless runs

        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.subplots()
    else:
        fig = ax.figure
    for pair, ss in by_pair.items():
        ss = sorted(ss, key=lambda s: s["layer"])
        x = [s["layer"] for s in ss]
        y = [s["mean_rel_change" + suffix] for s in ss]
        lo = [s["ci95_low" + suffix] for s in ss]
        hi = [s["ci95_high" + suffix] for s in ss]
        (line,) = ax.plot(x, y, marker="o", markersize=3, linewidth=1.6, linestyle=linestyle,
                          label=f"{label}: {pair}" if label else pair)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axhline(0.0, color="0.4", linestyle="--", linewidth=0.8)
    n = max(s["n"] for s in summary)
    window = rows[0]["window"]
    ax.set_xlabel(f"centre layer of the knockout window (k = {window})")
    ax.set_ylabel(VALUES[value])
    ax.set_title(title or f"{target}  (n = {n} samples)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    return fig


def plot_models(records_by_model: Dict[str, List[dict]], target: str, path=None, value: str = "rel_change",
                title: Optional[str] = None):
    """Several models' curves of one target on one figure (the paper's Finding 1 figure: the
    VideoLLM against its ImageLLM base); one line style per model, legend ``model: pair``.

    Args:
        records_by_model: model label -> sweep records.
        target, path, value, title: as ``plot_target``.

    Returns:
        the matplotlib Figure.

    Raises:
        ValueError: no model has records of ``target``, or an unknown ``value``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 4.0))
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    drawn = 0
    for i, (name, recs) in enumerate(records_by_model.items()):
        if any(r["target"] == target for r in recs):
            plot_target(recs, target, ax=ax, value=value, label=name, linestyle=styles[i % len(styles)])
            drawn += 1
    if not drawn:
        raise ValueError(f"no records of target {target!r} for any model")
    ax.set_title(title or f"{target}: " + " vs ".join(records_by_model))
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    return fig


def is_correct(record: dict) -> bool:
    """Whether a sweep record's sample was answered right: the baseline's full-vocabulary argmax is
    the true letter (the paper's rule, ``videolens.knockout.sweep.SAMPLE_MODES`` ``"correct"``)."""
    return record.get("true_t") is not None and record.get("base_answer_t") == record.get("true_t")


def plot_correct_incorrect(records: Iterable[dict], target: str, path=None, value: str = "rel_change",
                           title: Optional[str] = None):
    """Failure diagnosis (paper Section 5): one target's curves for the correctly and the wrongly
    answered samples side by side (``is_correct``), same axes, each panel titled with its n.

    Returns:
        the matplotlib Figure.

    Raises:
        ValueError: unknown ``value``, or no records of ``target``.
    """
    from matplotlib.figure import Figure

    rows = [r for r in records if r["target"] == target]
    if not rows:
        raise ValueError(f"no records of target {target!r}")
    fig = Figure(figsize=(11, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (name, keep) in zip(axes, (("correct", True), ("incorrect", False))):
        group = [r for r in rows if is_correct(r) == keep]
        n = len({r["sample_id"] for r in group})
        if group:
            plot_target(group, target, ax=ax, value=value, title=f"{name} samples (n = {n})")
        else:
            ax.set_title(f"{name} samples (n = 0)")
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title or f"{target}: correct vs incorrect")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    return fig
