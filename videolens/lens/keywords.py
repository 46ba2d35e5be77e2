"""Keyword tracking on logit-lens top-1 tokens (Map the Flow's methods, "Logit lens").

Paper: Kim et al. 2026, Finding 2: spatial words (objects) appear in the lens of foreground video
tokens while temporal words (actions) emerge in middle layers at other positions. Keyword lists are
data: the paper's Action Sequence lists ship as ``videolens/assets/keywords/action_sequence.json``
and users pass their own JSON or text files.

A keyword is matched by the *first sub-token* of its tokenization (no special tokens) against the
top-1 lens token. Keywords whose first sub-token is the unknown token or only white space (for
example SentencePiece's bare ``"▁"``) cannot be matched and are listed in
``KeywordMatcher.skipped``. When several keywords share a first sub-token, a hit counts for each of
them; per-category counts count a position once.

Layer bins are non-overlapping and named by their lens layers (``"L0-4"``, ``"L5-9"``, ...). The
paper's released code used bins that overlapped by one layer; these do not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from jaxtyping import Bool, Int

from ..prompting.layout import TokenLayout
from .core import LensResult, resid_label

__all__ = [
    "KeywordSet",
    "KeywordMatcher",
    "KeywordCounts",
    "BUILTIN_KEYWORD_DIR",
    "builtin_keyword_sets",
    "load_keywords",
    "merge_keyword_sets",
    "count_keywords",
    "layer_bins",
]

BUILTIN_KEYWORD_DIR = Path(__file__).resolve().parents[1] / "assets" / "keywords"


@dataclass(frozen=True)
class KeywordSet:
    """Named categories of keywords, e.g. ``{"spatial": ("cup", ...), "temporal": ("open", ...)}``."""

    name: str
    categories: Dict[str, Tuple[str, ...]]

    def __post_init__(self) -> None:
        if not self.categories:
            raise ValueError(f"keyword set {self.name!r} has no categories")
        for cat, words in self.categories.items():
            if not words:
                raise ValueError(f"keyword set {self.name!r}: category {cat!r} is empty")


def builtin_keyword_sets() -> List[str]:
    """Names of the keyword sets shipped with videolens."""
    return sorted(p.stem for p in BUILTIN_KEYWORD_DIR.glob("*.json"))


def _from_json(path: Path) -> KeywordSet:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object {{category: [words]}} or {{'categories': {{...}}}}")
    if "categories" in data:
        cats = data["categories"]
        if not isinstance(cats, dict):
            raise ValueError(f"{path}: 'categories' must be an object {{category: [words]}}")
    else:
        cats = {k: v for k, v in data.items() if k not in ("name", "source")}
    out = {}
    for cat, words in cats.items():
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{path}: category {cat!r} must be a list of strings")
        out[str(cat)] = tuple(w.strip() for w in words if w.strip())
    return KeywordSet(str(data.get("name", path.stem)), out)


def _from_text(path: Path) -> KeywordSet:
    """Lines ``category: w1, w2 ...`` or bare words (category = file stem); ``#`` starts a comment."""
    cats: Dict[str, List[str]] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cat, sep, rest = line.partition(":")
        if not sep:
            cat, rest = path.stem, line
        words = [w.strip() for w in rest.replace(",", " ").split() if w.strip()]
        if not cat.strip() or not words:
            raise ValueError(f"{path}:{n}: expected 'category: word, word' or words, got {raw!r}")
        cats.setdefault(cat.strip(), []).extend(words)
    if not cats:
        raise ValueError(f"{path}: no keywords")
    return KeywordSet(path.stem, {c: tuple(dict.fromkeys(w)) for c, w in cats.items()})


def load_keywords(spec: Union[str, Path]) -> KeywordSet:
    """A keyword set from a built-in name (``"action_sequence"``) or a file.

    Files: JSON ``{"name": ..., "categories": {"spatial": [...], ...}}`` or ``{"spatial": [...]}``;
    text with lines ``category: word, word`` or bare words (one category named after the file).

    Raises:
        FileNotFoundError: neither a file nor a built-in name (the message lists built-ins).
        ValueError: a malformed file (the message names it).
    """
    path = Path(spec)
    if not path.exists():
        builtin = BUILTIN_KEYWORD_DIR / f"{spec}.json"
        if builtin.exists() and "/" not in str(spec):
            return _from_json(builtin)
        raise FileNotFoundError(f"keywords {spec!r}: no such file and no built-in set (built-ins: {builtin_keyword_sets()})")
    return _from_json(path) if path.suffix.lower() == ".json" else _from_text(path)


def merge_keyword_sets(sets: Sequence[KeywordSet]) -> KeywordSet:
    """One set with the union of every category's words (order kept, duplicates dropped)."""
    cats: Dict[str, List[str]] = {}
    for s in sets:
        for c, words in s.categories.items():
            cats.setdefault(c, []).extend(words)
    return KeywordSet("+".join(s.name for s in sets), {c: tuple(dict.fromkeys(w)) for c, w in cats.items()})


@dataclass
class KeywordMatcher:
    """Keywords resolved to the token id of their first sub-token.

    Attributes:
        keywords: matchable keywords, in set order.
        categories: category of each keyword.
        token_ids: first sub-token id of each keyword.
        skipped: ``(category, word, reason)`` of keywords that cannot be matched.
    """

    keywords: List[str]
    categories: List[str]
    token_ids: List[int]
    skipped: List[Tuple[str, str, str]] = field(default_factory=list)

    @property
    def category_names(self) -> List[str]:
        return list(dict.fromkeys(self.categories))

    @classmethod
    def from_tokenizer(cls, keyword_set: KeywordSet, tokenizer) -> "KeywordMatcher":
        """Tokenize each keyword (no special tokens) and keep its first sub-token."""
        kws, cats, ids, skipped = [], [], [], []
        unk = getattr(tokenizer, "unk_token_id", None)
        for cat, words in keyword_set.categories.items():
            for w in words:
                enc = tokenizer(w, add_special_tokens=False)["input_ids"]
                if not enc:
                    skipped.append((cat, w, "no tokens"))
                    continue
                tid = int(enc[0])
                piece = tokenizer.convert_ids_to_tokens(tid)
                if unk is not None and tid == unk:
                    skipped.append((cat, w, "unknown token"))
                elif not str(piece).replace("\u2581", "").replace("\u0120", "").strip():
                    skipped.append((cat, w, f"first sub-token {piece!r} is only white space"))
                else:
                    kws.append(w)
                    cats.append(cat)
                    ids.append(tid)
        if not kws:
            raise ValueError(f"keyword set {keyword_set.name!r}: no keyword can be matched with this tokenizer")
        return cls(kws, cats, ids, skipped)

    def match(self, top1: Int[torch.Tensor, "*shape"]) -> Bool[torch.Tensor, "*shape n_keywords"]:
        """True where a top-1 token equals a keyword's first sub-token."""
        ids = torch.tensor(self.token_ids, device=top1.device)
        return top1[..., None] == ids


def layer_bins(n_layers: int, size: int = 5, layers: Optional[Iterable[int]] = None) -> Dict[str, List[int]]:
    """Non-overlapping named bins of lens layers ``0 .. n_layers``.

    Bin ``b`` holds lens layers ``b*size .. b*size + size - 1`` (clipped at ``n_layers``) and is
    named ``"L{lo}-{hi}"`` (``"L{lo}"`` for one layer). Example, 32 blocks: ``L0-4, ..., L25-29,
    L30-32`` (lens layer 32 is after the last block).

    Args:
        n_layers: the model's number of blocks.
        size: layers per bin (>= 1).
        layers: keep only these lens layers (empty bins are dropped); default all.

    Raises:
        ValueError: size < 1.
    """
    if size < 1:
        raise ValueError(f"bin size must be >= 1, got {size}")
    keep = set(range(n_layers + 1) if layers is None else layers)
    bins: Dict[str, List[int]] = {}
    for lo in range(0, n_layers + 1, size):
        hi = min(lo + size - 1, n_layers)
        members = [l for l in range(lo, hi + 1) if l in keep]
        if members:
            bins[f"L{lo}-{hi}" if hi > lo else f"L{lo}"] = members
    return bins


@dataclass
class KeywordCounts:
    """Keyword hits of the top-1 lens token at every chosen (lens layer, position).

    Attributes:
        layers: lens layers of the rows; ``n_layers``: the model's blocks.
        positions: positions ``[P]`` of the columns.
        keywords, categories: from the matcher (one entry per keyword).
        hits: ``[n_sel, P, n_keywords]`` bool.
        video_index: ``[P]`` index of each position in ``layout.video_positions`` (-1 if not video).
        video_grid: ``(T, h, w)``.
    """

    layers: List[int]
    n_layers: int
    positions: Int[torch.Tensor, "P"]
    keywords: List[str]
    categories: List[str]
    hits: Bool[torch.Tensor, "n_sel P n_keywords"]
    video_index: Int[torch.Tensor, "P"]
    video_grid: Tuple[int, int, int]

    @property
    def category_names(self) -> List[str]:
        return list(dict.fromkeys(self.categories))

    def category_hits(self) -> Bool[torch.Tensor, "n_sel P n_categories"]:
        """A position hits a category when its top-1 token matches any keyword of it."""
        names = self.category_names
        return torch.stack([self.hits[..., [c == n for c in self.categories]].any(-1) for n in names], -1)

    def per_layer(self) -> Int[torch.Tensor, "n_sel n_keywords"]:
        """Hits per lens layer and keyword, over all chosen positions."""
        return self.hits.sum(1)

    def per_layer_category(self) -> Dict[str, Int[torch.Tensor, "n_sel"]]:
        """Positions hit per lens layer, per category."""
        ch = self.category_hits().sum(1)
        return {n: ch[:, i] for i, n in enumerate(self.category_names)}

    def per_cell(self) -> Int[torch.Tensor, "n_sel T h w n_keywords"]:
        """Hits per lens layer at each video token (frame, row, column); non-video positions dropped."""
        T, h, w = self.video_grid
        out = torch.zeros(len(self.layers), T * h * w, len(self.keywords), dtype=torch.long)
        m = self.video_index >= 0
        out.index_add_(1, self.video_index[m], self.hits[:, m].long())
        return out.reshape(len(self.layers), T, h, w, len(self.keywords))

    def per_frame(self) -> Int[torch.Tensor, "n_sel T n_keywords"]:
        """Hits per lens layer and frame (temporal slot), per keyword."""
        return self.per_cell().sum((2, 3))

    def binned(self, size: int = 5) -> Dict[str, Dict[str, Any]]:
        """Per layer bin: positions hit per category, and the number of (layer, position) pairs.

        Returns:
            ``{"L0-4": {"layers": [...], "n": n_layers_in_bin * P, "hits": {category: count}}, ...}``;
            the frequency of a category in a bin is ``hits / n``.
        """
        ch = self.category_hits().sum(1)  # [n_sel, n_cat]
        out = {}
        for name, members in layer_bins(self.n_layers, size, self.layers).items():
            rows = [self.layers.index(l) for l in members]
            out[name] = {
                "layers": members,
                "n": len(rows) * len(self.positions),
                "hits": {c: int(ch[rows, i].sum()) for i, c in enumerate(self.category_names)},
            }
        return out

    def hit_records(self, lens: Optional[LensResult] = None) -> List[Dict[str, Any]]:
        """One record per (lens layer, position) whose top-1 is a keyword.

        Keys: ``layer``, ``label``, ``position``, ``keywords`` and their ``categories`` (aligned
        lists), ``frame``/``row``/``col`` for video tokens, and ``token``/``prob`` of the top-1
        when ``lens`` is given."""
        T, h, w = self.video_grid
        rows = []
        for i, j in self.hits.any(-1).nonzero().tolist():
            kw = [k for k, hit in enumerate(self.hits[i, j].tolist()) if hit]
            rec: Dict[str, Any] = {
                "layer": self.layers[i],
                "label": resid_label(self.layers[i], self.n_layers),
                "position": int(self.positions[j]),
                "keywords": [self.keywords[k] for k in kw],
                "categories": [self.categories[k] for k in kw],
            }
            v = int(self.video_index[j])
            if v >= 0:
                rec.update(frame=v // (h * w), row=(v // w) % h, col=v % w)
            if lens is not None:
                rec.update(token=int(lens.tokens[i, j, 0]), prob=float(lens.probs[i, j, 0]))
            rows.append(rec)
        return rows


def count_keywords(lens: LensResult, matcher: KeywordMatcher, layout: TokenLayout) -> KeywordCounts:
    """Match every top-1 lens token against the keywords.

    Args:
        lens: a ``logit_lens`` result (any positions; video positions also get coordinates).
        matcher: keywords resolved with the model's tokenizer.
        layout: the sample's token layout (for the video grid).

    Returns:
        ``KeywordCounts`` (hits ``[n_sel, P, n_keywords]``; per layer, per frame and per
        (frame, row, column) views).
    """
    hits = matcher.match(lens.top1)
    vp = layout.video_positions
    lookup = torch.full((layout.seq_len,), -1, dtype=torch.long)
    lookup[vp] = torch.arange(len(vp))
    return KeywordCounts(
        layers=list(lens.layers),
        n_layers=lens.n_layers,
        positions=lens.positions.clone(),
        keywords=list(matcher.keywords),
        categories=list(matcher.categories),
        hits=hits.cpu(),
        video_index=lookup[lens.positions.cpu()],
        video_grid=tuple(layout.video_grid),
    )
