"""Structural early exit (beyond the paper: it suggests early exit as a consequence of Finding 3 but
measures none): the accuracy when the answer is read at layer k by the logit lens, per task, and
the earliest layer whose accuracy is within ``tolerance`` points of the final layer's.

Input: the records of ``answer_probability_by_layer`` as ``videolens genprob`` writes them (one
``kind: "layer"`` record per lens layer with the option letter the lens ranks first, ``argmax``, and
the sample's ``true_letter``; the ``kind: "sample"`` record names the task). The answer at a layer
is the letter with the highest lens probability among the options (the paper's letter readout).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

__all__ = ["EarlyExit", "early_exit", "table"]


@dataclass(frozen=True)
class EarlyExit:
    """One task's accuracy by lens layer.

    Attributes:
        task: task name (``"all"`` for every sample).
        layers: lens layers (residual stream entering block ``l``; ``n_layers`` after the last).
        labels: their display labels.
        accuracy: percent correct per lens layer.
        n: samples.
        exit_layer: the earliest lens layer within ``tolerance`` points of the final accuracy.
        tolerance: in accuracy points.
    """

    task: str
    layers: List[int]
    labels: List[str]
    accuracy: List[float]
    n: int
    exit_layer: int
    tolerance: float

    @property
    def final(self) -> float:
        return self.accuracy[-1]

    def row(self) -> Dict[str, object]:
        """A table row: task, n, final accuracy, exit layer, its accuracy, the layers saved."""
        i = self.layers.index(self.exit_layer)
        return {"task": self.task, "n": self.n, "final_accuracy": round(self.final, 2), "exit_layer": self.exit_layer,
                "exit_label": self.labels[i], "exit_accuracy": round(self.accuracy[i], 2),
                "layers_saved": self.layers[-1] - self.exit_layer}


def early_exit(records: Iterable[dict], tolerance: float = 1.0) -> List[EarlyExit]:
    """Accuracy by lens layer per task (then ``"all"``), from genprob records.

    Args:
        records: ``videolens genprob`` records (``read_records(OUT / "genprob.jsonl")``).
        tolerance: accuracy points; the exit layer is the earliest whose accuracy differs from the
            final layer's by at most this much.

    Returns:
        one ``EarlyExit`` per task in order of appearance, then ``"all"``; empty without layer
        records that know their true letter.
    """
    records = list(records)
    task_of = {r["sample_id"]: (r.get("task") or "all") for r in records if r.get("kind") == "sample"}
    hits: Dict[str, Dict[int, List[bool]]] = defaultdict(lambda: defaultdict(list))
    labels: Dict[int, str] = {}
    samples: Dict[str, set] = defaultdict(set)
    for r in records:
        if r.get("kind") != "layer" or r.get("true_letter") is None:
            continue
        ok = r["argmax"] == r["true_letter"]
        labels[r["layer"]] = r.get("label", str(r["layer"]))
        for task in dict.fromkeys((task_of.get(r["sample_id"], "all"), "all")):
            hits[task][r["layer"]].append(ok)
            samples[task].add(r["sample_id"])
    out = []
    for task, by_layer in hits.items():
        layers = sorted(by_layer)
        acc = [100.0 * sum(by_layer[l]) / len(by_layer[l]) for l in layers]
        exit_layer = next(l for l, a in zip(layers, acc) if abs(a - acc[-1]) <= tolerance)
        out.append(EarlyExit(task, layers, [labels[l] for l in layers], acc, len(samples[task]), exit_layer,
                             float(tolerance)))
    return sorted(out, key=lambda e: e.task == "all")


def table(exits: Iterable[EarlyExit], path=None) -> Optional[str]:
    """The rows as CSV text (written to ``path`` when given)."""
    import csv
    import io

    rows = [e.row() for e in exits]
    if not rows:
        return None
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    if path is not None:
        from pathlib import Path

        Path(path).write_text(buf.getvalue())
    return buf.getvalue()
