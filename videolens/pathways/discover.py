"""Pathway discovery (beyond the paper, which chose its layer ranges by hand and names sample-adaptive
selection as future work): a pathway spec derived from a model's own knockout sweeps.

Input: ``videolens flow`` records of the targets ``cross-frame`` and ``vql-to-ql`` (any window). For
each edge type below, the mean relative change of the answer probability per centre layer says
where blocking that edge hurts. The edge type is KEPT at the centre layers where the mean change is
at most ``-threshold`` percent; runs separated by at most ``merge_gap`` layers are merged into one
range; a type that never reaches the threshold keeps the one layer where blocking hurts most (so no
edge type is removed outright). As in the paper's specs, video-to-video edges are blocked after the
last layer that keeps a video edge (cross-frame or video-to-question; the paper: after video-to-
question) and question-to-question edges after the last kept question-to-last layer. The result is
the same JSON spec data ``videolens pathways --spec`` reads.

Per task (``group_by="task"``: one spec per task, the ``task`` of each sample) or per sample
(``group_by="sample"``: sample-adaptive, from that sample's own sweep).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .loading import spec_from_dict
from .spec import PathwaySpec

__all__ = ["DISCOVERED_TYPES", "discover_spec", "discover_spec_data", "discover_specs", "kept_ranges",
           "read_flow", "discover_from_flow"]

DISCOVERED_TYPES = {
    "cross_frame": ("cross-frame", "cross-frame"),
    "video_to_question": ("vql-to-ql", "video->question"),
    "video_to_last": ("vql-to-ql", "video->last"),
    "question_to_last": ("vql-to-ql", "question->last"),
    "last_to_last": ("vql-to-ql", "last->last"),
}
"""Edge type -> (flow target, record pair) whose sweep decides it."""


def kept_ranges(effects: Dict[int, float], threshold: float, merge_gap: int = 1) -> List[List[int]]:
    """Inclusive ``[first, last]`` ranges of the layers whose mean effect is ``<= -threshold``,
    runs at most ``merge_gap`` layers apart merged; the most harmful layer alone when none qualify."""
    hit = sorted(l for l, v in effects.items() if v <= -threshold)
    if not hit:
        return [[min(effects, key=effects.get)] * 2]
    ranges = [[hit[0], hit[0]]]
    for l in hit[1:]:
        if l - ranges[-1][1] <= merge_gap + 1:
            ranges[-1][1] = l
        else:
            ranges.append([l, l])
    return ranges


def discover_spec(records: Iterable[dict], n_layers: int, name: str = "discovered", threshold: float = 10.0,
                  merge_gap: int = 1) -> PathwaySpec:
    """One validated spec from flow records (``discover_spec_data``, module doc)."""
    return spec_from_dict(discover_spec_data(records, n_layers, name, threshold, merge_gap), origin=name)


def discover_spec_data(records: Iterable[dict], n_layers: int, name: str = "discovered", threshold: float = 10.0,
                       merge_gap: int = 1) -> Dict:
    """The spec, as the JSON data ``videolens pathways --spec`` reads, from flow records (module doc).

    Args:
        records: ``videolens flow`` records with the targets ``cross-frame`` and ``vql-to-ql``.
        n_layers: the model's depth (the spec's ``n_layers``).
        threshold: percent; a layer keeps an edge type where blocking it lowers p(answer) by at
            least this much on average.
        merge_gap: kept runs this many layers apart or closer become one range.

    Raises:
        ValueError: the records lack a target the discovery needs (the message names it).
    """
    by_pair: Dict[Tuple[str, str], Dict[int, List[float]]] = defaultdict(lambda: defaultdict(list))
    samples = set()
    for r in records:
        if "rel_change" in r and r.get("target") and "pair" in r:
            by_pair[(r["target"], r["pair"])][r["layer"]].append(float(r["rel_change"]))
            samples.add(r.get("sample_id"))
    kept = {}
    for etype, key in DISCOVERED_TYPES.items():
        if key not in by_pair:
            raise ValueError(f"the flow records have no {key[1]!r} sweep of target {key[0]!r}: run "
                             f"videolens flow --target cross-frame vql-to-ql")
        effects = {l: sum(v) / len(v) for l, v in by_pair[key].items()}
        kept[etype] = kept_ranges(effects, threshold, merge_gap)
    blocked = {}
    video_end = max(b for t in ("cross_frame", "video_to_question") for _, b in kept[t])
    question_end = max(b for _, b in kept["question_to_last"])
    if video_end < n_layers - 1:  # video tokens stop mixing once no kept video edge needs them
        blocked["video_to_video"] = [[video_end + 1, n_layers - 1]]
    if question_end < n_layers - 1:
        blocked["question_to_question"] = [[question_end + 1, n_layers - 1]]
    spec = {"name": name, "n_layers": int(n_layers), "kept": kept, "always_blocked": blocked,
            "source": f"discovered by videolens.pathways.discover from {len(samples)} sample(s)' flow records "
                      f"(threshold {threshold:g}% on the mean relative change, merge gap {merge_gap})"}
    return spec


def discover_specs(records: Iterable[dict], n_layers: int, group_by: str = "task", threshold: float = 10.0,
                   merge_gap: int = 1, name: str = "discovered") -> Dict[str, PathwaySpec]:
    """``discover_spec`` per task (``group_by="task"``), per sample (``"sample"``, sample-adaptive)
    or over everything (``"all"``): ``{group: spec}``.

    Raises:
        ValueError: an unknown ``group_by``.
    """
    if group_by not in ("task", "sample", "all"):
        raise ValueError(f"group_by must be task, sample or all, got {group_by!r}")
    records = list(records)
    task_of = {r["sample_id"]: r.get("task") for r in records if r.get("kind") == "sample"}
    groups: Dict[str, List[dict]] = defaultdict(list)
    for r in records:
        key = {"task": task_of.get(r.get("sample_id")) or r.get("task") or "all", "sample": r.get("sample_id"),
               "all": "all"}[group_by]
        groups[str(key)].append(r)
    return {g: discover_spec(rs, n_layers, f"{name}-{g}", threshold, merge_gap) for g, rs in groups.items()
            if any("rel_change" in r for r in rs)}


def read_flow(flow_dir) -> Tuple[Dict, List[dict], int]:
    """A ``videolens flow`` folder's records header (its ``config``), its records and the model
    depth the sweep ran on.

    Raises:
        FileNotFoundError: no ``records.jsonl`` in ``flow_dir``.
        ValueError: its header does not give the model's ``n_layers``.
    """
    import json
    from pathlib import Path

    from ..running.records import read_records

    flow = Path(flow_dir) / "records.jsonl"
    if not flow.is_file():
        raise FileNotFoundError("no flow records (records.jsonl) there")
    header = json.loads(flow.read_text().splitlines()[0]).get("config", {})
    n_layers = header.get("n_layers")
    if not isinstance(n_layers, int):
        raise ValueError("its records header does not say the model's n_layers")
    return header, read_records(flow), n_layers


def discover_from_flow(flow_dir, out_dir, threshold: float = 10.0, group_by: str = "all") -> PathwaySpec:
    """The spec discovered from a ``videolens flow`` folder's records, written to
    ``out_dir/discovered_spec.json`` (and, with ``group_by`` ``"task"`` / ``"sample"``, one spec per
    group in ``out_dir/discovered_specs.json``); returns the first, loaded as ``load_spec`` would.

    Raises:
        FileNotFoundError, ValueError: from ``read_flow``.
    """
    import json
    from pathlib import Path

    from .loading import load_spec

    _, records, n_layers = read_flow(flow_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "discovered_spec.json").write_text(json.dumps(discover_spec_data(records, n_layers, "discovered",
                                                                             threshold), indent=1))
    if group_by != "all":
        groups = discover_specs(records, n_layers, group_by, threshold)
        (out / "discovered_specs.json").write_text(json.dumps(
            {g: {t: [list(r) for r in rs] for t, rs in s.kept.items()} for g, s in groups.items()}, indent=1))
    return load_spec(out / "discovered_spec.json")
