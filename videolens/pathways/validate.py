"""Pathway discovery that validates itself on held-out samples (beyond the paper, which chose its
layer ranges by hand).

``discover_spec`` keeps an edge type wherever its mean one-layer knockout effect passes a
threshold; with few clips, or effects spread over neighbouring layers, such a spec can lose far
more accuracy than the paper's "-0.3 points" on clips it has not seen. ``validated_discovery``
instead:

1. reads the per-sample effects of each edge type at each layer from the discovery samples' flow
   records, and smooths them over neighbouring layers (a layer's score is the mean effect of it
   and its neighbours, so an effect spread over several layers is not missed);
2. starts from each edge type's most harmful layer and *grows* the kept layers in order of score
   (most harmful first) until the accuracy on the validation samples is within ``tolerance``
   points of the full model's and the true letter's probability falls by at most as many
   percent on average (``prob_tolerance``) (a binary search over the grown sets, each checked on
   the validation samples);
3. *prunes back*: drops kept layers, weakest score first, while the validation checks still pass (an edge type left with no layer is blocked everywhere);
4. records the evidence in the spec: samples used, tolerance, full and spec accuracy on the
   validation samples, the fraction of edges kept, and whether the validation set is large
   enough to show the tolerance (a one-sided 95% Wilson bound on the share of answers the spec
   flips; with too few validation clips it says how many it would need), and which kept effects
   cannot be told from noise (with the discovery samples they would need).

Video-to-video and question-to-question edges follow the paper's specs: blocked after the last
layer that keeps a video edge (cross-frame or video-to-question) and after the last kept
question-to-last layer.

Method notes: docs/methods.md#effective-pathways.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from .counting import count_edges
from .discover import DISCOVERED_TYPES
from .loading import spec_from_dict

__all__ = ["Evidence", "split_samples", "layer_effects", "smoothed", "spec_data_from_layers", "Validator",
           "validated_discovery", "needed_for_tolerance", "flow_samples", "prepare_answerable", "validation_from_flow",
           "validated_from_flow", "answer_right"]

Item = Tuple[str, int]  # (edge type, layer)


@dataclass
class Evidence:
    """What a validated discovery rests on (stored in the spec's ``evidence``).

    Attributes:
        discovery_samples, validation_samples: sample counts.
        tolerance: accuracy points the spec may lose against the full model.
        full_accuracy, accuracy: validation accuracy (percent) of the full model and of the spec.
        flipped: validation samples the full model answers right and the spec wrong.
        drop_upper: one-sided 95% upper bound (Wilson) of the share of answers the spec flips, in
            points: what the validation set can show about unseen clips.
        validated: ``accuracy >= full_accuracy - tolerance`` and ``drop_upper <= tolerance``.
        needed_validation: validation samples that would bound the drop within the tolerance at
            the observed flip rate (None when enough).
        kept_fraction: edges kept over the full causal edges, on the validation samples (0-1).
        prob_change: mean relative change (percent) of the true letter's probability under the spec.
        effect_sd: the largest spread (sd, percent) of the per-sample effects of any edge type and layer.
        needed_discovery: discovery samples that would measure every layer's mean effect within
            +-``tolerance`` percent (95%) at that spread; None when the discovery samples do.
        noisy_effects: kept (edge type, layer) whose discovery effect cannot be told from zero
            (95%), each with the discovery samples that would separate it at its mean and spread.
        evaluations: spec evaluations on the validation samples (growth and pruning).
    """

    discovery_samples: int
    validation_samples: int
    tolerance: float
    full_accuracy: float
    accuracy: float
    flipped: int
    drop_upper: float
    validated: bool
    needed_validation: Optional[int]
    kept_fraction: float
    prob_change: float = 0.0
    effect_sd: float = 0.0
    needed_discovery: Optional[int] = None
    noisy_effects: List[Dict] = field(default_factory=list)
    evaluations: int = 0

    def summary(self) -> str:
        """A few lines for the console."""
        lines = [f"validation: {self.validation_samples} sample(s); full model {self.full_accuracy:.1f}%, "
                 f"spec {self.accuracy:.1f}% ({self.flipped} answer(s) flipped), "
                 f"{100 * self.kept_fraction:.1f}% of edges kept; discovery: {self.discovery_samples} sample(s)"]
        if self.validated:
            lines.append(f"validated: the spec loses at most {self.drop_upper:.1f} point(s) (95% bound), within the "
                         f"{self.tolerance:g}-point tolerance")
        elif self.needed_validation is None:
            lines.append(f"NOT validated: the spec flips {self.flipped} of {self.validation_samples} validation answers, "
                         f"more than the {self.tolerance:g}-point tolerance")
        else:
            lines.append(f"NOT validated: {self.validation_samples} validation sample(s) bound the spec's loss only at "
                         f"{self.drop_upper:.1f} points (95%), above the {self.tolerance:g}-point tolerance; about "
                         f"{self.needed_validation} validation samples would show it (or raise the tolerance)")
        if self.noisy_effects:
            lines.append(f"{len(self.noisy_effects)} kept layer effect(s) cannot be told from zero with "
                         f"{self.discovery_samples} discovery sample(s) (kept for their neighbours or the validation)")
        if self.needed_discovery is not None:
            lines.append(f"the per-sample effects spread up to {self.effect_sd:.1f}% (sd): measuring each layer's effect "
                         f"within +-{self.tolerance:g}% (95%) needs about {self.needed_discovery} discovery samples")
        return "\n".join(lines)


# ---- samples and effects ------------------------------------------------------------------------
def _rank(sample_id: str) -> str:
    return hashlib.sha256(str(sample_id).encode()).hexdigest()


def split_samples(sample_ids: Iterable[str], tasks: Dict[str, str]) -> Tuple[List[str], List[str]]:
    """A stable half/half split of ``sample_ids`` into (discovery, validation), per task (by a hash
    of each id, so a rerun splits the same way and each task is in both halves)."""
    by_task: Dict[str, List[str]] = defaultdict(list)
    for s in dict.fromkeys(sample_ids):
        by_task[tasks.get(s) or "all"].append(s)
    disc, val = [], []
    for ids in by_task.values():
        ordered = sorted(ids, key=_rank)
        disc += ordered[0::2]
        val += ordered[1::2]
    return disc, val


def layer_effects(records: Iterable[dict], sample_ids: Optional[Set[str]] = None) -> Dict[str, Dict[int, List[float]]]:
    """Per-sample relative changes (percent) of each discovered edge type at each centre layer.

    Raises:
        ValueError: the records lack a sweep the discovery needs (the message names it).
    """
    by_pair: Dict[Tuple[str, str], Dict[int, List[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if "rel_change" in r and r.get("target") and "pair" in r and (sample_ids is None or r.get("sample_id") in sample_ids):
            by_pair[(r["target"], r["pair"])][int(r["layer"])].append(float(r["rel_change"]))
    out = {}
    for etype, key in DISCOVERED_TYPES.items():
        if key not in by_pair:
            raise ValueError(f"the flow records have no {key[1]!r} sweep of target {key[0]!r}: run "
                             f"videolens flow --target cross-frame vql-to-ql")
        out[etype] = {l: v for l, v in by_pair[key].items()}
    return out


def smoothed(effects: Dict[str, Dict[int, List[float]]], radius: int = 1) -> Dict[str, Dict[int, float]]:
    """Each layer's score: the mean of the per-layer mean effects over ``layer +- radius``."""
    out = {}
    for etype, per_layer in effects.items():
        means = {l: float(np.mean(v)) for l, v in per_layer.items()}
        out[etype] = {l: float(np.mean([means[m] for m in range(l - radius, l + radius + 1) if m in means]))
                      for l in means}
    return out


def _ranges(layers: Iterable[int]) -> List[List[int]]:
    out: List[List[int]] = []
    for l in sorted(set(layers)):
        if out and l == out[-1][1] + 1:
            out[-1][1] = l
        else:
            out.append([l, l])
    return out


def spec_data_from_layers(kept: Dict[str, Set[int]], n_layers: int, name: str, source: str) -> Dict:
    """Spec data (what ``videolens pathways --spec`` reads) keeping each edge type in its layers; an
    edge type with none is blocked everywhere; video-to-video and question-to-question edges are
    blocked after the last kept video / question-to-last layer (the paper's rule)."""
    spec = {"name": name, "n_layers": int(n_layers), "kept": {}, "always_blocked": {}, "source": source}
    for etype in DISCOVERED_TYPES:
        layers = kept.get(etype, set())
        if layers:
            spec["kept"][etype] = _ranges(layers)
        else:
            spec["always_blocked"][etype] = "all"
    video_end = max([l for t in ("cross_frame", "video_to_question") for l in kept.get(t, ())], default=-1)
    question_end = max(kept.get("question_to_last", ()), default=-1)
    if video_end < n_layers - 1:
        spec["always_blocked"]["video_to_video"] = [[video_end + 1, n_layers - 1]]
    if question_end < n_layers - 1:
        spec["always_blocked"]["question_to_question"] = [[question_end + 1, n_layers - 1]]
    return spec


# ---- validation ---------------------------------------------------------------------------------
def answer_right(model, x, logits) -> Tuple[bool, float]:
    """Whether the argmax option letter at the last position is the true one, and the true letter's
    probability (full-vocabulary softmax, ``model.option_probs``)."""
    probs = model.option_probs(x, logits)
    return max(probs, key=probs.get) == x.layout.true_letter, float(probs[x.layout.true_letter])


def wilson_upper(k: int, n: int, z: float = 1.645) -> float:
    """One-sided upper confidence bound (95% for ``z = 1.645``) of a proportion ``k / n`` (Wilson)."""
    if n == 0:
        return 1.0
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + half) / (1 + z * z / n))


def needed_for_tolerance(flipped: int, n: int, tolerance: float, z: float = 1.645) -> Optional[int]:
    """Validation samples that would bound the flip share within ``tolerance`` points at the observed
    rate; None when ``n`` already does, or when the observed rate itself is above the tolerance (more
    samples would not help)."""
    t = tolerance / 100.0
    if wilson_upper(flipped, n, z) <= t:
        return None
    rate = flipped / n if n else 0.0
    if rate >= t:
        return None
    m = max(n, 1)
    while wilson_upper(int(round(rate * m)), m, z) > t and m < 10 ** 6:
        m = int(m * 1.1) + 1
    return m


class Validator:
    """Validation samples prepared once (the vision front end runs once per sample); answers the
    accuracy of any spec data on them with one masked forward per sample.

    Args:
        model: a ``HookedVideoLLM``.
        inputs: prepared validation samples (each with a ground-truth answer).
    """

    def __init__(self, model, inputs: Sequence):
        from .hooks import PathwayMasker

        self.model, self.inputs, self._masker = model, list(inputs), PathwayMasker
        with torch.no_grad():
            full = [self._answer(x, model(x)) for x in self.inputs]
        self.full = [c for c, _ in full]
        self.full_p = [p for _, p in full]
        self.evaluations = 0
        self.last_p: List[float] = []

    def _answer(self, x, logits) -> Tuple[bool, float]:
        return answer_right(self.model, x, logits)

    @property
    def full_accuracy(self) -> float:
        return 100.0 * sum(self.full) / max(1, len(self.full))

    def correct(self, spec_data: Dict) -> Tuple[List[bool], float]:
        """Per-sample correctness under the spec and the mean fraction of edges it keeps."""
        plan = spec_from_dict(spec_data, origin=spec_data.get("name", "candidate")).plan(self.model.cfg.n_layers)
        out, kept, p_true = [], [], []
        with torch.no_grad():
            for x in self.inputs:
                masker = self._masker(x.layout, plan)
                c, p = self._answer(x, self.model.run_with_hooks(x, fwd_hooks=masker.fwd_hooks()))
                out.append(c)
                p_true.append(p)
                masker.release()
                kept.append(count_edges(x.layout, plan).kept_fraction)
        self.evaluations += 1
        self.last_p = p_true
        return out, float(np.mean(kept)) if kept else 1.0

    def drop(self, correct: Sequence[bool]) -> float:
        """Accuracy points lost against the full model."""
        return self.full_accuracy - 100.0 * sum(correct) / max(1, len(correct))

    def prob_change(self) -> float:
        """Mean relative change (percent) of the true letter's probability in the last evaluation."""
        return float(np.mean([100.0 * (p - f) / f for p, f in zip(self.last_p, self.full_p) if f > 0]))


def _noisy(effects: Dict[str, Dict[int, List[float]]], kept: Dict[str, Set[int]]) -> List[Dict]:
    """Kept (type, layer) whose mean effect's 95% t interval includes zero, with the samples that
    would separate it from zero at its observed mean and spread."""
    from scipy import stats

    out = []
    for etype, layers in kept.items():
        for l in sorted(layers):
            v = np.asarray(effects[etype].get(l, []), dtype=float)
            if len(v) < 2:
                out.append({"edge_type": etype, "layer": l, "mean": float(v.mean()) if len(v) else float("nan"),
                            "sd": float("nan"), "needed_discovery": 2})
                continue
            mean, sd = float(v.mean()), float(v.std(ddof=1))
            half = stats.t.ppf(0.975, len(v) - 1) * sd / math.sqrt(len(v))
            if abs(mean) <= half:
                need = len(v) if sd == 0 else max(len(v) + 1, math.ceil((1.96 * sd / max(abs(mean), 1e-9)) ** 2))
                out.append({"edge_type": etype, "layer": l, "mean": mean, "sd": sd, "needed_discovery": int(need)})
    return out


def validated_discovery(model, records: Sequence[dict], validation_inputs: Sequence, tolerance: float = 2.0,
                        discovery_ids: Optional[Set[str]] = None, name: str = "discovered", radius: int = 1,
                        prob_tolerance: Optional[float] = None,
                        log: Optional[Callable[[str], None]] = None) -> Tuple[Dict, Evidence]:
    """A spec grown from the discovery samples' effects and checked on the validation samples
    (module doc); returns ``(spec data, evidence)``, the evidence also stored in the data.

    Args:
        model: a ``HookedVideoLLM``.
        records: ``videolens flow`` records with the targets ``cross-frame`` and ``vql-to-ql``.
        validation_inputs: prepared validation samples (``model.prepare``), with ground truth.
        tolerance: accuracy points the spec may lose against the full model on them.
        discovery_ids: the samples whose records are used (None: all).
        radius: layers on each side a layer's score averages over.
        prob_tolerance: also require the true letter's probability to fall by at most this many
            percent on average on the validation samples (a finer signal than accuracy on a few
            samples); None (default): the same number as ``tolerance``.
        log: ``log(message)`` for progress lines.

    Raises:
        ValueError: a tolerance outside [0, 100], no validation sample, or records lacking a sweep.
    """
    if not 0.0 <= tolerance <= 100.0:
        raise ValueError(f"tolerance must be in [0, 100] accuracy points, got {tolerance}")
    if not validation_inputs:
        raise ValueError("validated discovery needs validation samples")
    n_layers = model.cfg.n_layers
    prob_tolerance = tolerance if prob_tolerance is None else prob_tolerance
    effects = layer_effects(records, discovery_ids)
    n_disc = len({r.get("sample_id") for r in records if discovery_ids is None or r.get("sample_id") in discovery_ids}
                 - {None})
    score = smoothed(effects, radius)
    val = Validator(model, validation_inputs)
    source = (f"videolens.pathways.validate: grown from {n_disc} sample(s)' one-layer knockout effects (smoothed over "
              f"+-{radius} layer(s)) and checked on {len(validation_inputs)} validation sample(s), tolerance "
              f"{tolerance:g} point(s)")

    def data(kept: Dict[str, Set[int]]) -> Dict:
        return spec_data_from_layers(kept, n_layers, name, source)

    def as_kept(items: Iterable[Item]) -> Dict[str, Set[int]]:
        kept: Dict[str, Set[int]] = defaultdict(set)
        for t, l in items:
            kept[t].add(l)
        return kept

    def run(items: Sequence[Item]) -> Tuple[List[bool], float, float]:
        correct, kept_fraction = val.correct(data(as_kept(items)))
        return correct, kept_fraction, val.prob_change()

    def ok(result) -> bool:
        correct, _, pchange = result
        return val.drop(correct) <= tolerance and pchange >= -prob_tolerance

    base = [(t, min(s, key=s.get)) for t, s in score.items()]  # each type's most harmful layer
    order = sorted(((t, l) for t, s in score.items() for l in s if (t, l) not in base),
                   key=lambda it: (score[it[0]][it[1]], it))
    cache: Dict[int, Tuple[List[bool], float, float]] = {}

    def at(j: int):
        if j not in cache:
            cache[j] = run(base + order[:j])
        return cache[j]

    lo, hi = 0, len(order)  # the smallest j within tolerance (growing keeps more edges: accuracy rises)
    if not ok(at(0)):
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(at(mid)):
                hi = mid
            else:
                lo = mid + 1
    items = base + order[:lo]
    result = at(lo)
    if log:
        log(f"grown: {len(items)} kept (edge type, layer) of {len(base) + len(order)}, validation drop "
            f"{val.drop(result[0]):.1f} point(s), true-letter probability {result[2]:+.1f}%")
    tried: Set[Item] = set()
    changed = True
    while changed:  # prune back, weakest first, until a whole pass removes nothing
        changed = False
        for it in sorted(items, key=lambda it: (-score[it[0]][it[1]], it)):
            trial = [x for x in items if x != it]
            if (it, len(items)) in tried:
                continue
            tried.add((it, len(items)))
            r = run(trial)
            if ok(r):
                items, result, changed = trial, r, True
    correct, kept_fraction, pchange = result
    kept = as_kept(items)
    n = len(correct)
    flipped = sum(1 for a, b in zip(val.full, correct) if a and not b)
    upper = 100.0 * wilson_upper(flipped, n)
    accuracy = 100.0 * sum(correct) / n
    validated = val.full_accuracy - accuracy <= tolerance and upper <= tolerance
    sds = [float(np.std(v, ddof=1)) for per in effects.values() for v in per.values() if len(v) > 1]
    effect_sd = max(sds, default=0.0)
    need_disc = math.ceil((1.96 * effect_sd / tolerance) ** 2) if tolerance > 0 else None
    evidence = Evidence(discovery_samples=n_disc, validation_samples=n, tolerance=tolerance,
                        full_accuracy=val.full_accuracy, accuracy=accuracy, flipped=flipped, drop_upper=upper,
                        validated=validated,
                        needed_validation=None if validated else needed_for_tolerance(flipped, n, tolerance),
                        kept_fraction=kept_fraction, prob_change=pchange, effect_sd=effect_sd,
                        needed_discovery=need_disc if need_disc is not None and need_disc > n_disc else None,
                        noisy_effects=_noisy(effects, kept),
                        evaluations=val.evaluations)
    spec = data(kept)
    spec["evidence"] = asdict(evidence)
    return spec, evidence


def flow_samples(flow_dir) -> Tuple[List, List[dict], int]:
    """A flow folder's samples (re-read from the annotation files its records header names), its
    records and the model depth it ran on.

    Raises:
        FileNotFoundError: no records there, or an annotation file is gone.
        ValueError: the header names no data files or no depth, or a file changed since the sweep.
    """
    from ..fingerprint import data_fingerprint
    from ..sources.formats import load_annotation_files
    from .discover import read_flow

    header, records, n_layers = read_flow(flow_dir)
    data = header.get("data")
    if not isinstance(data, dict) or not data.get("files"):
        raise ValueError("its records header names no annotation files (a one-video sweep cannot be split; give "
                         "--validate-data)")
    files = list(data["files"])
    roots = data.get("video_roots") or data.get("video_root")
    now = data_fingerprint(files, roots if isinstance(roots, str) else None)
    changed = [f for f in files if now["files"].get(f) != data["files"][f]]
    if changed:
        raise ValueError(f"{changed[0]} changed since the sweep (its digest differs from the records header's)")
    samples = load_annotation_files(files, roots, format=header.get("format") or "auto")
    return samples, records, n_layers


def prepare_answerable(model, samples: Sequence, num_frames: Optional[int] = None, progress: bool = True,
                       desc: str = "samples", log: Optional[Callable[[str], None]] = None) -> List:
    """``model.prepare`` of each sample that can run and has a ground truth (the vision front end
    once per sample); the others are named through ``log`` and left out."""
    from tqdm.auto import tqdm

    from ..running.samples import prepare_or_skip

    out = []
    for s in tqdm(samples, desc=desc, unit="sample", disable=not progress):
        x, _, message = prepare_or_skip(model, s, num_frames)
        if x is not None and x.layout.true_letter is not None:
            out.append(x)
        elif log:
            log(f"{s.sample_id}: left out of the {desc} ({message or 'no ground truth'})")
    return out


def validation_from_flow(model, flow_dir, validation_samples: Optional[Sequence] = None,
                         num_frames: Optional[int] = None, progress: bool = True,
                         log: Optional[Callable[[str], None]] = None) -> Tuple[List[dict], List, Optional[Set[str]]]:
    """What a validated discovery from a flow folder needs: the flow's records, the prepared
    validation samples, and the discovery samples' ids (None: all of the flow's). Validation
    samples: ``validation_samples`` when given, else the flow's own samples split half/half per
    task (``split_samples``).

    Raises:
        FileNotFoundError, ValueError: from ``flow_samples``; the sweep ran on another depth than
            ``model``'s; no validation sample can run.
    """
    samples, records, n_layers = flow_samples(flow_dir)
    if n_layers != model.cfg.n_layers:
        raise ValueError(f"the sweep ran on a {n_layers}-layer model; this one has {model.cfg.n_layers}")
    discovery_ids: Optional[Set[str]] = None
    if validation_samples is None:
        swept = {r["sample_id"] for r in records if "rel_change" in r}
        tasks = {s.sample_id: s.task for s in samples if s.sample_id in swept}
        disc, val = split_samples(list(tasks), tasks)
        discovery_ids, keep = set(disc), set(val)
        validation_samples = [s for s in samples if s.sample_id in keep]
    inputs = prepare_answerable(model, validation_samples, num_frames, progress, "validation samples", log)
    if not inputs:
        raise ValueError("no validation sample could run")
    return records, inputs, discovery_ids


def validated_from_flow(model, flow_dir, out_dir, tolerance: float = 2.0, validation_samples: Optional[Sequence] = None,
                        num_frames: Optional[int] = None, prob_tolerance: Optional[float] = None,
                        progress: bool = True, log: Optional[Callable[[str], None]] = None) -> Tuple[Dict, Evidence]:
    """``validated_discovery`` from a ``videolens flow`` folder; the spec data (with its evidence)
    is written to ``out_dir/discovered_spec.json``.

    Validation samples: ``validation_samples`` when given (the flow's samples are all discovery
    samples), else the flow's own samples split half/half per task (``split_samples``).

    Raises:
        FileNotFoundError, ValueError: from ``validation_from_flow``.
    """
    import json
    from pathlib import Path

    records, inputs, discovery_ids = validation_from_flow(model, flow_dir, validation_samples, num_frames, progress,
                                                         log)
    spec, evidence = validated_discovery(model, records, inputs, tolerance, discovery_ids, prob_tolerance=prob_tolerance,
                                         log=log)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "discovered_spec.json").write_text(json.dumps(spec, indent=1))
    return spec, evidence
