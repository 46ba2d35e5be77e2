"""The edges-kept vs accuracy frontier (the paper's Finding 4 table, as a curve): several pathway
specs and the random control of the same kept fraction, on the same samples.

``frontier`` answers each prepared sample with full causal attention once, then with each spec's
pathways, and with random blocking of as many edges as each spec blocks (``RANDOM_MATCH``
``"total"``, several seeds). Each row gives the mean fraction of edges kept and the accuracy with
its 95% Wilson interval (a proportion's interval: it never leaves [0, 100]). ``write_frontier``
writes ``frontier.csv``; the figure is ``videolens.plots.pathways.plot_frontier``.

Method notes: docs/methods.md#effective-pathways.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from .counting import count_edges
from .evaluate import random_block_counts
from .hooks import PathwayMasker, RandomMasker
from .spec import PathwaySpec
from .validate import answer_right

__all__ = ["proportion_ci", "frontier", "write_frontier", "frontier_from_flow", "FRONTIER_FIELDS"]

FRONTIER_FIELDS = ("spec", "kind", "kept_fraction", "accuracy", "ci_low", "ci_high", "n", "seeds")


def proportion_ci(k: int, n: int, level: float = 0.95) -> Tuple[float, float]:
    """Wilson interval of a proportion ``k / n`` in percent (within [0, 100] by construction).

    Raises:
        ValueError: ``n`` < 1 or ``k`` outside ``[0, n]``.
    """
    from scipy import stats

    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"a proportion needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return 100.0 * ci.low, 100.0 * ci.high


def _correct(model, x, logits) -> bool:
    return answer_right(model, x, logits)[0]


@torch.no_grad()
def frontier(model, inputs: Sequence, specs: Mapping[str, Tuple[PathwaySpec, str]], seeds: Sequence[int] = (0, 1, 2),
             progress: bool = True) -> List[Dict]:
    """Rows of the frontier: the full model, each spec (``{name: (spec, kind)}``, ``kind`` a label
    such as ``"discovered"`` or ``"paper"``), and the random control of each spec's blocked count.

    Args:
        model: a ``HookedVideoLLM``.
        inputs: prepared samples with ground truth (``model.prepare``).
        specs: the specs, mapped to the model's depth by relative depth.
        seeds: random-control seeds; each sample and layer draws its own edges from the seed.

    Returns:
        Rows with ``FRONTIER_FIELDS``: ``kept_fraction`` (0-1, mean over samples), ``accuracy``,
        ``ci_low`` / ``ci_high`` (percent), ``n`` (answers counted; seeds x samples for random).

    Raises:
        ValueError: no input.
    """
    from tqdm.auto import tqdm

    if not inputs:
        raise ValueError("the frontier needs samples")
    L = model.cfg.n_layers
    plans = {name: spec.plan(L) for name, (spec, _) in specs.items()}
    full: List[bool] = []
    hits: Dict[str, List[bool]] = {name: [] for name in specs}
    rand: Dict[str, List[bool]] = {name: [] for name in specs}
    kept: Dict[str, List[float]] = {name: [] for name in specs}
    for x in tqdm(inputs, desc="frontier", unit="sample", disable=not progress):
        full.append(_correct(model, x, model(x)))
        sid = x.sample.sample_id if x.sample is not None else ""
        for name, plan in plans.items():
            counts = count_edges(x.layout, plan)
            kept[name].append(counts.kept_fraction)
            masker = PathwayMasker(x.layout, plan)
            hits[name].append(_correct(model, x, model.run_with_hooks(x, fwd_hooks=masker.fwd_hooks())))
            masker.release()
            n_block = random_block_counts(counts, "total", x.layout)
            for seed in seeds:
                rnd = RandomMasker(x.layout, n_block, seed=seed, key=sid)
                rand[name].append(_correct(model, x, model.run_with_hooks(x, fwd_hooks=rnd.fwd_hooks())))
                rnd.release()

    def row(spec: str, kind: str, answers: List[bool], fraction: float, n_seeds: int = 1) -> Dict:
        k, n = int(sum(answers)), len(answers)
        lo, hi = proportion_ci(k, n)
        return {"spec": spec, "kind": kind, "kept_fraction": fraction, "accuracy": 100.0 * k / n, "ci_low": lo,
                "ci_high": hi, "n": n, "seeds": n_seeds}

    rows = [row("full causal", "full", full, 1.0)]
    for name, (_, kind) in specs.items():
        f = float(np.mean(kept[name]))
        rows.append(row(name, kind, hits[name], f))
        rows.append(row(f"random ({name})", "random", rand[name], f, len(seeds)))
    return rows


def write_frontier(rows: Sequence[Dict], path) -> Path:
    """``frontier.csv`` with ``FRONTIER_FIELDS`` (kept fraction and accuracy in percent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FRONTIER_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "kept_fraction": round(100 * r["kept_fraction"], 2), "accuracy": round(r["accuracy"], 2),
                        "ci_low": round(r["ci_low"], 2), "ci_high": round(r["ci_high"], 2)})
    return path


def frontier_from_flow(model, flow_dir, test_samples: Sequence, out_dir, tolerances: Sequence[float] = (1, 2, 5, 10, 25),
                       seeds: Sequence[int] = (0, 1, 2), specs: Sequence[str] = ("llava-next-7b-video-ft",),
                       validation_samples=None, num_frames=None, progress: bool = True, log=None) -> List[Dict]:
    """The frontier of ``videolens pathways --frontier``: validated discoveries from a flow folder
    at each tolerance (``videolens.pathways.validate``; validation as ``validated_from_flow``), the
    named shipped specs mapped to the model's depth, and the random control of each, evaluated on
    ``test_samples``. Writes ``out_dir/frontier.csv`` and each discovered spec as
    ``out_dir/frontier_specs/discovered-tol<T>.json``; returns the rows.

    Raises:
        FileNotFoundError, ValueError: from ``validation_from_flow`` / ``validated_discovery``; no
            test sample can run.
    """
    import json

    from .loading import load_spec, spec_from_dict
    from .validate import prepare_answerable, validated_discovery, validation_from_flow

    records, val_inputs, discovery_ids = validation_from_flow(model, flow_dir, validation_samples, num_frames, progress,
                                                              log)
    test_inputs = prepare_answerable(model, test_samples, num_frames, progress, "test samples", log)
    if not test_inputs:
        raise ValueError("no test sample could run")
    out = Path(out_dir) / "frontier_specs"
    out.mkdir(parents=True, exist_ok=True)
    chosen: Dict[str, Tuple[PathwaySpec, str]] = {}
    for tol in tolerances:
        name = f"discovered-tol{tol:g}"
        data, evidence = validated_discovery(model, records, val_inputs, float(tol), discovery_ids, name=name)
        (out / f"{name}.json").write_text(json.dumps(data, indent=1))
        if log:
            log(f"{name}: {evidence.summary().splitlines()[0]}")
        chosen[name] = (spec_from_dict(data, origin=name), "discovered")
    for name in specs:
        chosen[name] = (load_spec(name), "shipped")
    rows = frontier(model, test_inputs, chosen, seeds, progress)
    write_frontier(rows, Path(out_dir) / "frontier.csv")
    return rows
