"""Pathway specs from files and dicts: validation with messages that name the file and entry, the
shipped specs (``videolens/pathway_specs``), and new built-in edge types (``register_edge_type``).
The spec format is described in ``videolens.pathways.spec``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

from ..hooked.edges import RELATIONS, EdgePair, parse_pair
from ..prompting.layout import GROUP_RESOLVERS
from .spec import _SPAN_GROUPS, EDGE_TYPES, PathwaySpec, Range, SpecError

__all__ = ["load_spec", "list_specs", "spec_from_dict", "register_edge_type"]


def register_edge_type(name: str, pairs: Sequence[str], overwrite: bool = False) -> None:
    """Add a built-in edge type ``name`` made of EdgePair strings (validated now).

    Raises:
        SpecError: a pair string that does not parse, or names an unknown group or relation.
        ValueError: the name is taken (unless ``overwrite``).
    """
    EDGE_TYPES.register(name, tuple(_check_pair(p, f"edge type {name!r}") for p in pairs), overwrite)



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
               "description", "random_block_ratio", "random_block_ratio_source", "evidence"}


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
