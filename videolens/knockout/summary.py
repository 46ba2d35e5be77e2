"""The numbers behind the knockout figures: per (target, pair, centre layer) the mean relative
change and its 95% interval over samples (Student t, ``videolens.stats``), and their CSV.

Example::

    from videolens.knockout.summary import write_summary_csv
    from videolens.plots.knockout import plot_target
    write_summary_csv(records, "summary.csv")
    fig = plot_target(records, "cross-frame", path="cross-frame.png")  # x: centre layer, y: mean change
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List

from ..stats import RELATIVE_CHANGE, mean_ci

__all__ = ["summarize", "write_summary_csv"]

def summarize(records: Iterable[dict]) -> List[dict]:
    """One row per (target, pair, centre layer), in sweep order.

    Columns: ``target, pair, layer, window_start, window_end, n`` (samples), ``mean_rel_change,
    ci95_low, ci95_high`` (baseline answer), ``mean_rel_change_true, ci95_low_true,
    ci95_high_true`` (ground truth), ``answer_changed`` (fraction whose answer moved),
    ``accuracy_after`` (fraction right after knockout), ``n_blocked`` (mean edges per layer).
    """
    groups: Dict[tuple, List[dict]] = defaultdict(list)
    for r in records:
        groups[(r["target"], r["pair"], r["layer"])].append(r)
    rows = []
    for (target, pair, layer), rs in groups.items():
        m, lo, hi = mean_ci([r["rel_change"] for r in rs], bounds=RELATIVE_CHANGE)
        trues = [r["rel_change_true"] for r in rs if r.get("rel_change_true") is not None]
        mt, lot, hit = mean_ci(trues, bounds=RELATIVE_CHANGE) if trues else (float("nan"),) * 3  # open-ended runs know no truth
        with_truth = [r for r in rs if r.get("true_letter")]
        rows.append(
            {
                "target": target,
                "pair": pair,
                "layer": layer,
                "window_start": min(rs[0]["layers"]),
                "window_end": max(rs[0]["layers"]),
                "n": len(rs),
                "mean_rel_change": m,
                "ci95_low": lo,
                "ci95_high": hi,
                "mean_rel_change_true": mt,
                "ci95_low_true": lot,
                "ci95_high_true": hit,
                "answer_changed": sum(r["ko_letter"] != r["base_letter"] for r in rs) / len(rs),
                "accuracy_after": (sum(r["ko_letter"] == r["true_letter"] for r in with_truth) / len(with_truth))
                if with_truth else float("nan"),
                "n_blocked": sum(r["n_blocked"] for r in rs) / len(rs),
            }
        )
    return rows


def write_summary_csv(records: Iterable[dict], path) -> Path:
    """Write ``summarize(records)`` as CSV (header row, one line per target x pair x layer)."""
    rows = summarize(records)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0]) if rows else ["target", "pair", "layer", "n"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


