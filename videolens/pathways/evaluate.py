"""Accuracy with full causal attention, with a pathway spec, and with the random control.

The paper's Finding 4: on the same samples, answer with (1) full causal
attention, (2) only the spec's pathways kept, (3) the same number of edges blocked at random;
accuracy = the argmax option letter at the last position equals the ground-truth letter. Records
are plain dicts (one per sample x condition); ``summarize`` turns them into the paper's table
(video tokens, edges kept, accuracy, delta vs full causal), per task and overall.

Example::

    spec = load_spec("llava-next-7b-video-ft")
    records = evaluate(model, load_tvbench("action_sequence.json", "videos/"), spec, random_control=True)
    print(summary_markdown(summarize(records)))
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch

from ..errors import require_finite
from ..sources.data import VideoQA
from ..prompting.inputs import VideoLLMInput
from ..prompting.layout import TokenLayout
from ..registry import Registry
from ..stats import relative_change
from .counting import EdgeCounts, count_edges, format_count, full_edges
from .masks import lower_triangle_size
from .hooks import PathwayMasker, RandomMasker
from .loading import load_spec
from .spec import LayerPlan, PathwaySpec

__all__ = ["CONDITIONS", "RANDOM_MATCH", "random_block_counts", "evaluate_sample", "evaluate", "summarize",
           "summary_markdown", "write_summary"]

CONDITIONS = ("full", "pathways", "random")


def _per_layer(counts: EdgeCounts, layout: TokenLayout, ratio: Optional[float]) -> List[int]:
    return list(counts.blocked)


def _spread(counts: EdgeCounts, layout: TokenLayout, ratio: Optional[float]) -> List[int]:
    total, n = sum(counts.blocked), len(counts.blocked)
    return [total // n + (1 if l < total % n else 0) for l in range(n)]


def _official(counts: EdgeCounts, layout: TokenLayout, ratio: Optional[float]) -> List[int]:
    if ratio is None:  # no official ratio for this spec: the plan's own blocked fraction
        ratio = 1.0 - counts.kept_fraction
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"random_block_ratio must lie in [0, 1], got {ratio}")
    n = min(int(full_edges(layout.seq_len) * ratio), lower_triangle_size(layout, diagonal=True))
    return [n] * len(counts.full)


#: How many edges the random control blocks per layer, given the pathway plan's counts:
#: "official" (default) = the official code: ``int(ratio x S(S+1)/2)`` edges in EVERY layer
#: (capped at the eligible ones), the diagonal eligible, ratio = the spec's ``random_block_ratio``
#: (the official scripts' ``--random_block_ratio``) or else the plan's blocked fraction;
#: "layer" = the plan's count in that same layer, diagonal never drawn (videolens' matched
#: control, a difference from the paper); "total" = the plan's total spread evenly over layers.
RANDOM_MATCH = Registry("random control", {"official": _official, "layer": _per_layer, "total": _spread})
_RANDOM_DIAGONAL = {"official": True, "layer": False, "total": False}


def random_block_counts(counts: EdgeCounts, match: str = "official", layout: Optional[TokenLayout] = None,
                        ratio: Optional[float] = None) -> List[int]:
    """Edges the random control blocks in each layer (see ``RANDOM_MATCH``).

    Raises:
        KeyError: unknown ``match``. ValueError: ``"official"`` without ``layout``, or a ratio
            outside [0, 1].
    """
    if match not in RANDOM_MATCH:
        raise KeyError(f"unknown random match {match!r}; known: {sorted(RANDOM_MATCH)}")
    if match == "official" and layout is None:
        raise ValueError("the official random control needs the layout (its eligible edges)")
    return RANDOM_MATCH[match](counts, layout, ratio)


def _record(model, inputs: VideoLLMInput, logits: torch.Tensor, condition: str, full: int, kept: Sequence[int],
            base_t: Optional[int] = None) -> Dict[str, Any]:
    probs = model.option_probs(inputs, logits)
    answer = max(probs, key=probs.get)
    truth = inputs.layout.true_letter
    sample = inputs.sample
    p_full = logits[0, -1].float().softmax(-1)
    argmax_t = int(p_full.argmax())
    base_t = argmax_t if base_t is None else base_t
    return {
        "condition": condition,
        "task": (sample.task if sample is not None else None) or "all",
        "truth": truth,
        "answer": answer,
        "correct": answer == truth,
        "p_true": probs.get(truth) if truth else None,
        "probs": probs,
        "argmax_t": argmax_t,
        "base_argmax_t": base_t,
        "p_base_argmax": float(p_full[base_t]),
        "seq_len": inputs.seq_len,
        "video_grid": list(inputs.layout.video_grid),
        "n_layers": len(kept),
        "edges_full": full * len(kept),
        "edges_kept": int(sum(kept)),
        "kept_fraction": sum(kept) / (full * len(kept)),
        "kept_per_layer": [int(k) for k in kept],
    }


def _add_relative(records: List[Dict[str, Any]]) -> None:
    """The official relative changes vs the full-attention record: ``rel_change`` for the full
    run's argmax token, ``rel_change_true`` for the true letter (percent)."""
    base = records[0]
    for r in records:
        r["rel_change"] = relative_change(r["p_base_argmax"], base["p_base_argmax"])
        if base["p_true"]:
            r["rel_change_true"] = relative_change(r["p_true"], base["p_true"])


@torch.no_grad()
def evaluate_sample(
    model,
    inputs: VideoLLMInput,
    spec: PathwaySpec | LayerPlan | str,
    random_control: bool = True,
    seed: int = 0,
    match: str = "official",
    key: Optional[str] = None,
    random_ratio: Optional[float] = None,
    pruned: bool = False,
) -> List[Dict[str, Any]]:
    """Answer one sample under full causal attention, the pathway spec, and (optionally) the random
    control; one record per condition (official analysis/effective_pathway_analysis.py).

    Args:
        model: a ``HookedVideoLLM``.
        inputs: the prepared sample (``model.prepare``); its layout must carry the true letter.
        spec: a spec (resolved for ``model.cfg.n_layers`` by relative depth), a ready ``LayerPlan``,
            or a spec name / file.
        random_control: also run the random control.
        seed: random-control seed; the draw also depends on ``key`` and the layer (the official
            draw is unseeded, so only its counts can be reproduced).
        match: random-control edge budget per layer (``RANDOM_MATCH``; default the official rule).
        key: sample key for the random draw (default: the sample id).
        random_ratio: the official ``--random_block_ratio``; None: the spec's, else the plan's
            blocked fraction.
        pruned: compute the pathway condition with ``videolens.pathways.pruned.pruned_logits``
            (video rows dropped where no kept position reads them; the same answer, less work).

    Returns:
        Records with ``condition``, ``task``, ``truth``, ``answer`` (argmax option letter),
        ``correct``, ``p_true``, ``probs`` (option letters), ``argmax_t`` (full-vocabulary argmax),
        ``base_argmax_t`` / ``p_base_argmax`` (the full run's argmax token and its probability
        here), ``rel_change`` / ``rel_change_true`` (percent vs full attention, the official
        ``relative_diff`` / ``relative_diff_gt``), ``seq_len``, ``video_grid``, ``n_layers``,
        ``edges_full``, ``edges_kept``, ``kept_fraction``, ``kept_per_layer``.

    Raises:
        ValueError: the plan's depth is not the model's.
        videolens.hooked.edges.EmptyRowError: a mask would empty some query's row (before it runs).
    """
    inputs.one_row("evaluate_sample")
    plan = spec if isinstance(spec, LayerPlan) else load_spec(spec).plan(model.cfg.n_layers)
    if plan.n_layers != model.cfg.n_layers:
        raise ValueError(f"plan is for {plan.n_layers} layers, the model has {model.cfg.n_layers}")
    layout = inputs.layout
    counts = count_edges(layout, plan)
    full = counts.full[0]
    if key is None:
        key = inputs.sample.sample_id if inputs.sample is not None else ""

    records = [_record(model, inputs, model(inputs), "full", full, counts.full)]
    base_t = records[0]["argmax_t"]

    if pruned:
        from .pruned import pruned_forward

        logits, pruned_from = pruned_forward(model, inputs, plan)
    else:
        masker = PathwayMasker(layout, plan)
        logits = model.run_with_hooks(inputs, fwd_hooks=masker.fwd_hooks())
        masker.release()
    records.append(_record(model, inputs, logits, "pathways", full, counts.kept, base_t))
    if pruned:
        records[-1]["pruned_from_layer"] = pruned_from

    if random_control:
        ratio = random_ratio if random_ratio is not None else plan.random_block_ratio
        n_block = random_block_counts(counts, match, layout, ratio)
        rnd = RandomMasker(layout, n_block, seed=seed, key=key, diagonal=_RANDOM_DIAGONAL[match])
        logits = model.run_with_hooks(inputs, fwd_hooks=rnd.fwd_hooks())
        rnd.release()
        records.append(_record(model, inputs, logits, "random", full, [full - n for n in n_block], base_t))
    _add_relative(records)
    return require_finite(records, "evaluate_sample")


def evaluate(
    model,
    samples: Sequence[VideoQA],
    spec: PathwaySpec | str,
    random_control: bool = True,
    seed: int = 0,
    match: str = "official",
    num_frames: Optional[int] = None,
    writer=None,
    progress: bool = True,
    random_ratio: Optional[float] = None,
    self_edges: str = "block",
    pruned: bool = False,
) -> List[Dict[str, Any]]:
    """``evaluate_sample`` over a dataset (``videolens.sources.data.load_tvbench``), with a tqdm bar.

    Args:
        self_edges: ``"block"`` (official) or ``"keep"`` (``PathwaySpec.plan``).
        pruned: as ``evaluate_sample``.
        writer: optional ``videolens.running.records.RecordWriter``; finished samples are skipped and each
            sample's records are written as it finishes (resumable). A sample that cannot run
            (``videolens.running.samples.prepare_or_skip``) is recorded with its skip status; one with
            non-finite outputs gets ``"non_finite"`` and no records.

    Returns:
        The records of this call (with ``sample_id``), plus, with a writer, those already written.
    """
    from ..running.samples import MemoryWriter, run_samples

    plan = load_spec(spec).plan(model.cfg.n_layers, self_edges=self_edges)
    mine = writer if writer is not None else MemoryWriter()
    run_samples(model, samples, mine,
                lambda sample, inputs: evaluate_sample(model, inputs, plan, random_control, seed, match,
                                                       sample.sample_id, random_ratio, pruned),
                num_frames=num_frames, desc=f"pathways {plan.spec_name}", progress=progress, sample_records=False)
    return mine.records()


# ---- summary ------------------------------------------------------------------------------------
def summarize(records: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The paper's table per task and overall (all samples pooled), one row per task x condition.

    Row fields: ``task``, ``condition``, ``n``, ``video_tokens`` ("8x12x12"), ``edges_kept`` and
    ``edges_full`` (means per sample, summed over layers), ``kept_fraction`` (their ratio),
    ``edges_kept_text`` ("42.0% (10.8M/25.7M)"), ``accuracy`` (%), ``delta_vs_full`` (points).
    Tasks are sorted, "overall" last; conditions in ``CONDITIONS`` order.
    """
    records = list(records)
    groups: Dict[tuple, List[Dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["task"], r["condition"])].append(r)
        groups[("overall", r["condition"])].append(r)
    tasks = sorted({t for t, _ in groups if t != "overall"}) + ["overall"]
    conds = [c for c in CONDITIONS if any(k[1] == c for k in groups)]
    conds += sorted({c for _, c in groups} - set(conds))
    rows = []
    for task in tasks:
        acc_full = None
        for cond in conds:
            rs = groups.get((task, cond))
            if not rs:
                continue
            n = len(rs)
            acc = 100.0 * sum(bool(r["correct"]) for r in rs) / n
            kept = sum(r["edges_kept"] for r in rs) / n
            full = sum(r["edges_full"] for r in rs) / n
            grid = Counter("x".join(str(x) for x in r["video_grid"]) for r in rs).most_common(1)[0][0]
            if cond == "full":
                acc_full = acc
            rows.append({
                "task": task,
                "condition": cond,
                "n": n,
                "video_tokens": grid,
                "edges_kept": kept,
                "edges_full": full,
                "kept_fraction": kept / full,
                "edges_kept_text": f"{100 * kept / full:.1f}% ({format_count(kept)}/{format_count(full)})",
                "accuracy": acc,
                "delta_vs_full": None if acc_full is None else acc - acc_full,
            })
    return rows


def _fmt_delta(d: Optional[float]) -> str:
    return "" if d is None else f"{d:+.1f}"


def summary_markdown(rows: List[Dict[str, Any]], title: Optional[str] = None) -> str:
    """Markdown: the overall table with the paper's columns, then accuracy per task."""
    lines = [f"## {title}", ""] if title else []
    lines += ["| condition | video tokens | edges kept | accuracy | vs full causal | samples |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        if r["task"] == "overall":
            lines.append(f"| {r['condition']} | {r['video_tokens']} | {r['edges_kept_text']} | {r['accuracy']:.1f} | "
                         f"{_fmt_delta(r['delta_vs_full']) if r['condition'] != 'full' else ''} | {r['n']} |")
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    lines += ["", "| task | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
    for task in dict.fromkeys(r["task"] for r in rows):
        cells = []
        for c in conds:
            r = next((x for x in rows if x["task"] == task and x["condition"] == c), None)
            if r is None:
                cells.append("")
            elif c == "full":
                cells.append(f"{r['accuracy']:.1f}")
            else:
                cells.append(f"{r['accuracy']:.1f} ({_fmt_delta(r['delta_vs_full'])})")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(rows: List[Dict[str, Any]], out_dir: Path | str, title: Optional[str] = None) -> Dict[str, Path]:
    """Write ``summary.csv`` and ``summary.md`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = ["task", "condition", "n", "video_tokens", "edges_kept", "edges_full", "kept_fraction",
              "edges_kept_text", "accuracy", "delta_vs_full"]
    csv_path = out_dir / "summary.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in fields})
    md_path = out_dir / "summary.md"
    md_path.write_text(summary_markdown(rows, title))
    return {"csv": csv_path, "markdown": md_path}
