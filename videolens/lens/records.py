"""Records of a dataset run of the logit lens (``videolens lens``), and their aggregation.

``LensSettings`` is the run's settings, built and checked once; ``lens_records`` turns one sample
into plain JSON records (per-layer keyword counts, hits, optionally the top-k); ``binned_from_records``
sums a run's records into the layer bins the keyword-frequency figure draws
(``videolens.plots.lens.plot_keyword_frequency``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

from .core import LENS_MODES
from .keywords import KeywordMatcher, count_keywords, layer_bins

__all__ = ["LensSettings", "lens_records", "binned_from_records"]


@dataclass(frozen=True)
class LensSettings:
    """Settings of a logit-lens run.

    Attributes:
        positions: token groups read by the lens (``("video",)``, ``("video", "last")``, ...).
        layers: lens layers (``videolens.layers`` syntax: ``"all"``, ``"0-4,10,final"``).
        k: top-k tokens kept per layer and position.
        mode: a ``LENS_MODES`` name (``"final_norm"``; ``"raw_embed"``: the paper's released code).
        chunk_size: positions projected at once (a memory bound; changes no number).
        save_topk: also record the top-k tokens of every layer and position.

    Raises (when built):
        ValueError: no position, k or chunk size < 1, unknown mode.
    """

    positions: Sequence[str] = ("video",)
    layers: str = "all"
    k: int = 5
    mode: str = "final_norm"
    chunk_size: int = 128
    save_topk: bool = False

    def __post_init__(self) -> None:
        positions = self.positions.split(",") if isinstance(self.positions, str) else self.positions
        object.__setattr__(self, "positions", tuple(g.strip() for g in positions if g.strip()))
        if not self.positions:
            raise ValueError("lens settings: no token group to read (positions)")
        if self.k < 1 or self.chunk_size < 1:
            raise ValueError(f"lens settings: k and chunk_size must be >= 1, got {self.k}, {self.chunk_size}")
        if self.mode not in LENS_MODES:
            raise ValueError(f"unknown lens mode {self.mode!r}; known: {sorted(LENS_MODES)}")

    def header(self) -> dict:
        """The settings that identify a run (records header fields); ``chunk_size`` changes no number."""
        return {"positions": ",".join(self.positions), "layers": self.layers, "k": self.k, "mode": self.mode,
                "save_topk": self.save_topk}


def lens_records(model, inputs, matcher: KeywordMatcher, settings: LensSettings) -> List[Dict[str, Any]]:
    """Records of one sample: per-layer counts (``kind`` ``layer_counts``), keyword hits (``hit``)
    and, with ``settings.save_topk``, the top-k tokens (``topk``)."""
    from .core import logit_lens

    lens = logit_lens(model, inputs, positions=list(settings.positions), layers=settings.layers, k=settings.k,
                      mode=settings.mode, chunk_size=settings.chunk_size)
    counts = count_keywords(lens, matcher, inputs.layout)
    per_cat = counts.per_layer_category()
    per_kw = counts.per_layer()
    out: List[Dict[str, Any]] = []
    for i, (l, label) in enumerate(zip(lens.layers, lens.labels)):
        out.append({
            "kind": "layer_counts", "layer": l, "label": label, "n_positions": len(lens.positions),
            "hits": {c: int(v[i]) for c, v in per_cat.items()},
            "keywords": {kw: int(n) for kw, n in zip(counts.keywords, per_kw[i].tolist()) if n},
        })
    out += [{"kind": "hit", **r} for r in counts.hit_records(lens)]
    if settings.save_topk:
        for i, (l, label) in enumerate(zip(lens.layers, lens.labels)):
            out.append({"kind": "topk", "layer": l, "label": label, "positions": lens.positions.tolist(),
                        "tokens": lens.tokens[i].tolist(),
                        "probs": [[round(p, 6) for p in r] for r in lens.probs[i].tolist()]})
    return out


def binned_from_records(records: List[Dict[str, Any]], n_layers: int, size: int) -> Dict[str, Dict[str, Any]]:
    """Sum ``layer_counts`` records into non-overlapping bins of ``size`` lens layers:
    ``{bin name: {"layers": [...], "n": positions read, "hits": {category: count}}}``."""
    rows = [r for r in records if r.get("kind") == "layer_counts"]
    bins = layer_bins(n_layers, size, sorted({r["layer"] for r in rows}))
    out: Dict[str, Dict[str, Any]] = {}
    for name, members in bins.items():
        hits: Dict[str, int] = {}
        n = 0
        for r in rows:
            if r["layer"] in members:
                n += r["n_positions"]
                for c, v in r["hits"].items():
                    hits[c] = hits.get(c, 0) + v
        out[name] = {"layers": members, "n": n, "hits": hits}
    return out
