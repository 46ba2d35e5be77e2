"""Pathway specs: which attention edge types each layer keeps (data), and their per-layer plan.

A spec (REFERENCE section 2, "Effective pathways"; the paper's Finding 4) is a JSON object::

    {
      "name": "llava-next-7b-video-ft",
      "n_layers": 32,                                   # depth the layer numbers refer to
      "kept": {                                         # edge type -> 0-indexed inclusive ranges
        "cross_frame": [[5, 14]],                       #   where it is KEPT; blocked in every
        "video_to_question": [[5, 19]],                 #   other layer
        "question_to_last": [[15, 24]]
      },
      "always_blocked": {                               # edge type -> layers where it is blocked:
        "last_to_last": "all",                          #   every layer,
        "video_to_last": "all",
        "video_to_video": {"after": "video_to_question"},   # after the last kept layer of a
        "question_to_question": {"after": "question_to_last"},  # "kept" entry,
        "within_frame": [[30, 31]]                      #   or explicit ranges
      },
      "edge_types": {"my_type": ["video->frame:0"]},    # optional: spec-local edge types
      "model": "...", "video_grid": [8, 12, 12], "source": "...", "paper": {...},  # metadata
      "random_block_ratio": 0.58                      # optional: the official random control's ratio
    }

Edge types name lists of ``videolens.edges.EdgePair`` strings (``"KEY->QUERY[relation]"`` over
TokenLayout groups); the built-in ones are in ``EDGE_TYPES``. Edges of types the spec does not
name (system prompt, the text between video and question, the answer prefix, ...) are always kept.
Blocking wins: an edge that a "kept" type and a blocked type share is blocked.

**Depth rule** (``map_layers``): a spec written for ``n_layers = L`` applies to a model with
``L'`` layers by relative depth. Source layer ``i`` covers the depth interval ``[i/L, (i+1)/L)``;
target layer ``j`` belongs to a mapped range ``[a, b]`` when its centre ``(j + 0.5) / L'`` lies in
``[a/L, (b+1)/L)``. With ``L' == L`` this is the identity; ranges that tile the source depth tile
the target depth (so "kept" and "after" never overlap or leave a gap); a non-empty range that
would map to no layer keeps the single target layer holding the centre of the range. ``"after"``
is resolved after mapping: the layers after the last mapped kept layer.

Example::

    spec = load_spec("llava-next-7b-video-ft")
    plan = spec.plan(32)                  # LayerPlan
    plan.blocked_types(0)                 # ('cross_frame', 'video_to_question', 'question_to_last', ...)
    plan.blocked_pairs(0)                 # EdgePairs blocked in layer 0
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..edges import RELATIONS, EdgePair, parse_pair
from ..errors import VideolensError
from ..layout import GROUP_RESOLVERS
from ..registry import Registry

__all__ = [
    "EDGE_TYPES",
    "SpecError",
    "PathwaySpec",
    "LayerPlan",
    "load_spec",
    "list_specs",
    "spec_from_dict",
    "map_layers",
    "register_edge_type",
]

Range = Tuple[int, int]

#: Built-in edge types: name -> EdgePair strings ("KEY->QUERY[relation]"), REFERENCE section 2.
EDGE_TYPES: Registry[Tuple[str, ...]] = Registry("edge type", {
    "cross_frame": ("video->video[cross_frame]",),  # frame j -> frame i, j < i
    "within_frame": ("video->video[same_frame]",),
    "video_to_video": ("video->video",),  # all video edges, within frame too
    "video_to_question": ("video->question",),
    "video_to_last": ("video->last",),
    "question_to_last": ("question->last",),  # question text and option lines -> last
    "question_to_question": ("question->question",),
    "last_to_last": ("last->last",),  # only the self edge: blocked under self_edges="block" (official)
    "non_option_question_to_last": ("non_option_question->last",),
    "true_option_to_last": ("true_option->last",),
    "false_options_to_last": ("false_options->last",),
    "video_to_non_option_question": ("video->non_option_question",),
    "video_to_true_option": ("video->true_option",),
    "non_option_question_to_true_option": ("non_option_question->true_option",),
})

#: Span names a TokenLayout may carry besides GROUP_RESOLVERS (videolens.prompts.BuiltPrompt).
_SPAN_GROUPS = ("system", "question_text", "answer_prefix", "bos", "placeholder")



class SpecError(VideolensError, ValueError):
    """A malformed pathway spec; the message names the file and the offending entry."""


def register_edge_type(name: str, pairs: Sequence[str], overwrite: bool = False) -> None:
    """Add a built-in edge type ``name`` made of EdgePair strings (validated now).

    Raises:
        SpecError: a pair string that does not parse, or names an unknown group or relation.
        ValueError: the name is taken (unless ``overwrite``).
    """
    EDGE_TYPES.register(name, tuple(_check_pair(p, f"edge type {name!r}") for p in pairs), overwrite)


# ---- depth mapping ----------------------------------------------------------------------------
def map_layers(ranges: Sequence[Range], src_layers: int, dst_layers: int) -> Tuple[int, ...]:
    """Map inclusive layer ranges of a ``src_layers``-deep model to a ``dst_layers``-deep one.

    Target layer ``j`` is in the image of ``[a, b]`` when ``(j + 0.5) / dst`` lies in
    ``[a / src, (b + 1) / src)`` (relative depth); a range that would map to nothing keeps the
    single layer holding the range's centre. Identity when ``src == dst``.

    Returns:
        Sorted target layer indices.
    """
    out = set()
    for a, b in ranges:
        lo = math.ceil(a * dst_layers / src_layers - 0.5)
        hi = math.ceil((b + 1) * dst_layers / src_layers - 0.5) - 1
        lo, hi = max(lo, 0), min(hi, dst_layers - 1)
        if hi < lo:
            centre = (a + b + 1) / 2 / src_layers
            lo = hi = min(dst_layers - 1, int(centre * dst_layers))
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


# ---- the spec ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PathwaySpec:
    """A validated pathway spec (see the module docstring for the format).

    Attributes:
        name: spec name (records, tables).
        n_layers: depth the layer numbers refer to.
        edge_types: every edge type the spec names -> its EdgePairs.
        kept: edge type -> inclusive layer ranges where it is kept (blocked elsewhere).
        always_blocked: edge type -> ``"all"``, ``("after", kept_name)`` or a tuple of ranges.
        meta: everything else in the file (model, video_grid, source, paper numbers).
        origin: the file or name it came from (for messages).
    """

    name: str
    n_layers: int
    edge_types: Dict[str, Tuple[EdgePair, ...]]
    kept: Dict[str, Tuple[Range, ...]]
    always_blocked: Dict[str, Union[str, Tuple[str, str], Tuple[Range, ...]]]
    meta: Dict[str, Any] = field(default_factory=dict)
    origin: str = "<dict>"
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def digest(self) -> str:
        """Short hash of the spec's content (stored with runs, so a resume with an edited spec fails)."""
        text = json.dumps(self.raw, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def random_block_ratio(self) -> Optional[float]:
        """The official scripts' ``--random_block_ratio`` for this model (the spec file's
        ``random_block_ratio``), or None."""
        r = self.meta.get("random_block_ratio")
        return None if r is None else float(r)

    def plan(self, n_layers: Optional[int] = None, self_edges: str = "block") -> "LayerPlan":
        """The per-layer plan for a model with ``n_layers`` layers (default: the spec's own depth),
        mapped by relative depth (``map_layers``). ``self_edges``: ``"block"`` (official: the
        diagonal is blocked too for last_to_last, video_to_video and question_to_question) or
        ``"keep"`` (never block self edges; a difference from the paper)."""
        from ..edges import check_self_edges

        check_self_edges(self_edges)
        n = self.n_layers if n_layers is None else int(n_layers)
        if n < 1:
            raise ValueError(f"n_layers must be >= 1, got {n}")
        kept = {t: map_layers(r, self.n_layers, n) for t, r in self.kept.items()}
        blocked: Dict[str, Tuple[int, ...]] = {}
        for t, kept_layers in kept.items():
            blocked[t] = tuple(l for l in range(n) if l not in set(kept_layers))
        for t, sel in self.always_blocked.items():
            if sel == "all":
                layers: Tuple[int, ...] = tuple(range(n))
            elif isinstance(sel, tuple) and len(sel) == 2 and sel[0] == "after":
                last = max(kept[sel[1]])
                layers = tuple(range(last + 1, n))
            else:
                layers = map_layers(sel, self.n_layers, n)
            blocked[t] = tuple(sorted(set(blocked.get(t, ())) | set(layers)))
        per_layer = tuple(tuple(t for t in blocked if l in blocked[t]) for l in range(n))
        return LayerPlan(self.name, n, per_layer, {t: self.edge_types[t] for t in blocked}, kept, blocked,
                         self_edges, self.random_block_ratio)


@dataclass(frozen=True)
class LayerPlan:
    """A spec resolved for one depth: which edge types each layer blocks.

    Attributes:
        spec_name: the spec's name.
        n_layers: model depth.
        per_layer: ``per_layer[l]`` = names of the edge types blocked in layer ``l``.
        pairs: edge type -> EdgePairs.
        kept_layers / blocked_layers: edge type -> layer indices (after depth mapping).
        self_edges: ``"block"`` (official) or ``"keep"``: whether blocked edge types include the
            diagonal where key and query groups overlap (``videolens.edges``).
        random_block_ratio: the spec's official random-control ratio (None: use the plan's own
            blocked fraction).
    """

    spec_name: str
    n_layers: int
    per_layer: Tuple[Tuple[str, ...], ...]
    pairs: Dict[str, Tuple[EdgePair, ...]]
    kept_layers: Dict[str, Tuple[int, ...]]
    blocked_layers: Dict[str, Tuple[int, ...]]
    self_edges: str = "block"
    random_block_ratio: Optional[float] = None

    def blocked_types(self, layer: int) -> Tuple[str, ...]:
        """Names of the edge types blocked in ``layer``."""
        return self.per_layer[layer]

    def blocked_pairs(self, layer: int) -> Tuple[EdgePair, ...]:
        """EdgePairs blocked in ``layer`` (their union is that layer's blocked edge set)."""
        return tuple(p for t in self.per_layer[layer] for p in self.pairs[t])

    def describe(self) -> List[str]:
        """One line per edge type: kept / blocked layers, for printing."""
        lines = []
        for t in self.pairs:
            kept = self.kept_layers.get(t)
            what = f"kept {_fmt_layers(kept)}" if kept is not None else f"blocked {_fmt_layers(self.blocked_layers[t])}"
            lines.append(f"{t:24s} {what}")
        return lines


def _fmt_layers(layers: Sequence[int]) -> str:
    if not layers:
        return "none"
    runs, start, prev = [], layers[0], layers[0]
    for l in list(layers[1:]) + [None]:
        if l is not None and l == prev + 1:
            prev = l
            continue
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
        if l is not None:
            start = prev = l
    return "L" + ",".join(runs)


# ---- loading and validation -------------------------------------------------------------------
def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    seen: Dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise SpecError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def _check_pair(text: Any, where: str) -> EdgePair:
    if not isinstance(text, str):
        raise SpecError(f"{where}: edge {text!r} must be a string 'KEY->QUERY[relation]'")
    try:
        pair = parse_pair(text)
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from None
    for group in (pair.key, pair.query):
        head = group.partition(":")[0]
        if head not in GROUP_RESOLVERS and head not in _SPAN_GROUPS:
            raise SpecError(
                f"{where}: edge {text!r} names unknown token group {group!r}; known: {sorted(GROUP_RESOLVERS)} "
                f"and spans {list(_SPAN_GROUPS)}"
            )
    if pair.relation not in RELATIONS:
        raise SpecError(f"{where}: edge {text!r} has unknown relation {pair.relation!r}; known: {sorted(RELATIONS)}")
    return pair


def _check_ranges(value: Any, n_layers: int, where: str) -> Tuple[Range, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where}: expected a non-empty list of [first, last] layer ranges, got {value!r}")
    ranges = []
    for r in value:
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in r)):
            raise SpecError(f"{where}: range {r!r} must be [first, last] (two integers, inclusive)")
        a, b = r
        if a > b:
            raise SpecError(f"{where}: range {r!r} has first > last")
        if a < 0 or b >= n_layers:
            raise SpecError(f"{where}: range {r!r} is out of range for {n_layers} layers (0..{n_layers - 1})")
        ranges.append((a, b))
    ranges.sort()
    for (a0, b0), (a1, b1) in zip(ranges, ranges[1:]):
        if a1 <= b0:
            raise SpecError(f"{where}: ranges [{a0}, {b0}] and [{a1}, {b1}] overlap")
    return tuple(ranges)


def _layer_set(sel, kept: Mapping[str, Tuple[Range, ...]], n: int) -> set:
    if sel == "all":
        return set(range(n))
    if isinstance(sel, tuple) and len(sel) == 2 and sel[0] == "after":
        return set(range(max(b for _, b in kept[sel[1]]) + 1, n))
    return {l for a, b in sel for l in range(a, b + 1)}


_KNOWN_KEYS = {"name", "n_layers", "kept", "always_blocked", "edge_types", "model", "video_grid", "source", "paper",
               "description", "random_block_ratio", "random_block_ratio_source"}


def spec_from_dict(d: Mapping[str, Any], origin: str = "<dict>") -> PathwaySpec:
    """Validate a spec given as a dict (the JSON object).

    Raises:
        SpecError: naming ``origin`` and the offending entry, for: a missing or wrong-typed field,
            an unknown top-level key, an unknown edge type, a malformed or unparsable edge, a
            layer range out of ``0..n_layers-1``, reversed or overlapping ranges of one entry,
            an ``after`` reference to a type not in ``kept``, or an edge type both kept and
            blocked in the same layer.
    """
    if not isinstance(d, Mapping):
        raise SpecError(f"{origin}: a pathway spec must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - _KNOWN_KEYS)
    if unknown:
        raise SpecError(f"{origin}: unknown key(s) {unknown}; known: {sorted(_KNOWN_KEYS)}")
    for key in ("name", "n_layers", "kept"):
        if key not in d:
            raise SpecError(f"{origin}: missing field {key!r}")
    name, n = d["name"], d["n_layers"]
    if not isinstance(name, str) or not name:
        raise SpecError(f"{origin}: 'name' must be a non-empty string")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise SpecError(f"{origin}: 'n_layers' must be a positive integer, got {n!r}")

    types: Dict[str, Tuple[EdgePair, ...]] = {}
    local = d.get("edge_types", {})
    if not isinstance(local, Mapping):
        raise SpecError(f"{origin}: 'edge_types' must map names to lists of edges")
    for t, pairs in local.items():
        if not isinstance(pairs, list) or not pairs:
            raise SpecError(f"{origin}: edge_types[{t!r}] must be a non-empty list of 'KEY->QUERY' strings")
        types[t] = tuple(_check_pair(p, f"{origin}: edge_types[{t!r}]") for p in pairs)

    def resolve_type(t: str, where: str) -> None:
        if t in types:
            return
        if t not in EDGE_TYPES:
            raise SpecError(
                f"{origin}: {where}: unknown edge type {t!r}; known: {sorted(EDGE_TYPES)} "
                f"(or define it under 'edge_types')"
            )
        types[t] = tuple(_check_pair(p, f"edge type {t!r}") for p in EDGE_TYPES[t])

    kept_raw = d["kept"]
    if not isinstance(kept_raw, Mapping):
        raise SpecError(f"{origin}: 'kept' must map edge types to layer ranges")
    kept: Dict[str, Tuple[Range, ...]] = {}
    for t, ranges in kept_raw.items():
        resolve_type(t, f"kept[{t!r}]")
        kept[t] = _check_ranges(ranges, n, f"{origin}: kept[{t!r}]")

    blocked_raw = d.get("always_blocked", {})
    if not isinstance(blocked_raw, Mapping):
        raise SpecError(f"{origin}: 'always_blocked' must map edge types to layers")
    blocked: Dict[str, Any] = {}
    for t, sel in blocked_raw.items():
        where = f"{origin}: always_blocked[{t!r}]"
        resolve_type(t, f"always_blocked[{t!r}]")
        if sel == "all":
            blocked[t] = "all"
        elif isinstance(sel, Mapping):
            if set(sel) != {"after"} or not isinstance(sel["after"], str):
                raise SpecError(f"{where}: expected {{\"after\": \"<kept edge type>\"}}, got {dict(sel)!r}")
            if sel["after"] not in kept:
                raise SpecError(f"{where}: 'after' names {sel['after']!r}, which is not under 'kept' ({sorted(kept)})")
            blocked[t] = ("after", sel["after"])
        else:
            blocked[t] = _check_ranges(sel, n, where)
        if t in kept:
            both = _layer_set(blocked[t], kept, n) & _layer_set(kept[t], kept, n)
            if both:
                raise SpecError(f"{where}: {t!r} is also kept in layer(s) {sorted(both)}: kept and blocked overlap")

    meta = {k: v for k, v in d.items() if k not in ("name", "n_layers", "kept", "always_blocked", "edge_types")}
    return PathwaySpec(name, n, types, kept, blocked, meta, origin, json.loads(json.dumps(dict(d))))


def list_specs() -> List[str]:
    """Names of the specs shipped in ``videolens/pathway_specs``."""
    return sorted(p.name[: -len(".json")] for p in _specs_dir().iterdir() if p.name.endswith(".json"))


def _specs_dir():
    return resources.files("videolens") / "pathway_specs"


def _read_file(path: Path) -> Dict[str, Any]:
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:  # pragma: no cover - PyYAML is optional
                raise SpecError(f"{path}: reading YAML specs needs PyYAML (pip install pyyaml), or use JSON") from None
            return yaml.safe_load(text)
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except Exception as exc:
        raise SpecError(f"{path}: cannot parse the spec: {exc}") from exc


def load_spec(name_or_path: Union[str, Path, Mapping[str, Any], PathwaySpec]) -> PathwaySpec:
    """A pathway spec by shipped name (``list_specs()``), by file path (.json, or .yaml with PyYAML),
    or from a dict.

    Raises:
        FileNotFoundError: neither a shipped name nor an existing file (the message lists the names).
        SpecError: the spec is malformed (see ``spec_from_dict``).
    """
    if isinstance(name_or_path, PathwaySpec):
        return name_or_path
    if isinstance(name_or_path, Mapping):
        return spec_from_dict(name_or_path)
    text = str(name_or_path)
    path = Path(text)
    if path.is_file():
        return spec_from_dict(_read_file(path), str(path))
    if text in list_specs():
        ref = _specs_dir() / f"{text}.json"
        try:
            data = json.loads(ref.read_text(), object_pairs_hook=_no_duplicates)
        except (SpecError, json.JSONDecodeError) as exc:
            raise SpecError(f"{text}.json: {exc}") from None
        return spec_from_dict(data, f"{text}.json")
    raise FileNotFoundError(f"no pathway spec named or at {text!r}; shipped specs: {list_specs()}")
