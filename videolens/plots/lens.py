"""Figures for the logit lens and answer probability by layer (matplotlib, PNG).

Every function returns a ``matplotlib.figure.Figure`` (shown inline in Jupyter) and writes a PNG
when ``path`` is given. Figures are built without pyplot, so no global state or GUI backend is used.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..stats import PROBABILITY, mean_ci

__all__ = [
    "CATEGORY_COLORS",
    "category_color",
    "sum_binned",
    "plot_keyword_frequency",
    "plot_word_map",
    "plot_answer_probability",
    "plot_early_exit",
]

CATEGORY_COLORS = {"spatial": "tab:blue", "temporal": "tab:red", "true": "tab:green", "false": "tab:gray"}
_CYCLE = ["tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


def category_color(name: str, names: Sequence[str] = ()) -> str:
    """Colour of a keyword category (spatial blue, temporal red, others from a cycle)."""
    if name in CATEGORY_COLORS:
        return CATEGORY_COLORS[name]
    others = [n for n in names if n not in CATEGORY_COLORS]
    return _CYCLE[(others.index(name) if name in others else len(others)) % len(_CYCLE)]


def _save(fig: Figure, path: Optional[Union[str, Path]]) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(str(path), dpi=120, bbox_inches="tight")
    return fig


def sum_binned(binned: Iterable[Mapping[str, Mapping[str, Any]]]) -> Dict[str, Dict[str, Any]]:
    """Add up ``KeywordCounts.binned()`` results of several samples (same bins)."""
    out: Dict[str, Dict[str, Any]] = {}
    for b in binned:
        for name, v in b.items():
            acc = out.setdefault(name, {"layers": list(v["layers"]), "n": 0, "hits": Counter()})
            acc["n"] += int(v["n"])
            acc["hits"].update({c: int(x) for c, x in v["hits"].items()})
    return {k: {**v, "hits": dict(v["hits"])} for k, v in out.items()}


def plot_keyword_frequency(
    binned: Mapping[str, Mapping[str, Any]],
    path: Optional[Union[str, Path]] = None,
    title: str = "Keyword frequency of the top-1 logit-lens token",
    n_samples: Optional[int] = None,
) -> Figure:
    """Grouped bars: per layer bin, the frequency of each keyword category among top-1 tokens.

    Frequency = hits / (lens layers in the bin x positions x samples), so bins of different sizes
    compare (Map the Flow's methods; paper Finding 2).

    Args:
        binned: ``KeywordCounts.binned()`` or ``sum_binned`` of several samples.
        path: PNG to write.
        n_samples: shown in the title when given.
    """
    names = list(binned)
    cats = list(dict.fromkeys(c for v in binned.values() for c in v["hits"]))
    fig = Figure(figsize=(max(5.0, 0.8 * len(names) + 2), 3.6))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(cats))
    x = np.arange(len(names))
    for i, c in enumerate(cats):
        freq = [binned[n]["hits"].get(c, 0) / max(1, binned[n]["n"]) for n in names]
        ax.bar(x + (i - (len(cats) - 1) / 2) * width, freq, width, label=c, color=category_color(c, cats))
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_xlabel("lens layer bin (residual stream entering the layer)")
    ax.set_ylabel("top-1 keyword frequency")
    ax.set_title(title + (f" (n={n_samples})" if n_samples else ""), fontsize=10)
    ax.legend(frameon=False)
    return _save(fig, path)


def _square_crop(frame: np.ndarray) -> np.ndarray:
    """Centre square of a frame: the region the vision tower sees after its centre crop."""
    H, W = frame.shape[:2]
    s = min(H, W)
    top, left = (H - s) // 2, (W - s) // 2
    return frame[top : top + s, left : left + s]


def plot_word_map(
    frames: np.ndarray,
    hits: Sequence[Mapping[str, Any]],
    video_grid: Tuple[int, int, int],
    bins: Mapping[str, Sequence[int]],
    path: Optional[Union[str, Path]] = None,
    title: Optional[str] = None,
) -> Figure:
    """Keywords drawn at their (frame, row, column) over the video frames, one row per layer bin.

    Each cell shows the keyword that is most often the top-1 lens token there within the bin,
    coloured by category. Frames are centre-cropped to a square (the region the vision tower sees
    after its crop); temporal slot ``t`` shows the first of the frames pooled into it.

    Args:
        frames: sampled frames, uint8 ``[F, H, W, 3]`` (``inputs.video.frames``).
        hits: ``KeywordCounts.hit_records()`` (records need ``layer``, ``frame``, ``row``, ``col``,
            ``keywords`` and the aligned ``categories``; others are ignored).
        video_grid: ``(T, h, w)``.
        bins: ``layer_bins(...)``: bin name -> lens layers.
        path: PNG to write.
    """
    T, h, w = video_grid
    F = frames.shape[0]
    bin_of = {l: name for name, ls in bins.items() for l in ls}
    cats = sorted({c for r in hits for c in r.get("categories", [])})
    words: Dict[Tuple[str, int, int, int], Counter] = {}
    cat_of: Dict[str, str] = {}
    for r in hits:
        if "frame" not in r or r["layer"] not in bin_of:
            continue
        key = (bin_of[r["layer"]], r["frame"], r["row"], r["col"])
        for kw in r["keywords"]:
            words.setdefault(key, Counter())[kw] += 1
        for kw, c in zip(r["keywords"], r["categories"]):
            cat_of.setdefault(kw, c)
    names = list(bins)
    fig = Figure(figsize=(1.6 * T + 1.0, 1.6 * len(names) + 0.6))
    axes = fig.subplots(len(names), T, squeeze=False)
    for i, name in enumerate(names):
        for t in range(T):
            ax = axes[i, t]
            img = _square_crop(frames[min(F - 1, t * F // T)])
            ax.imshow(img, extent=(0, w, h, 0), interpolation="nearest")
            for k in range(1, max(h, w)):
                if k < w:
                    ax.axvline(k, color="white", lw=0.3, alpha=0.5)
                if k < h:
                    ax.axhline(k, color="white", lw=0.3, alpha=0.5)
            for (b, ft, r, c), cnt in words.items():
                if b != name or ft != t:
                    continue
                kw, _ = cnt.most_common(1)[0]
                ax.text(c + 0.5, r + 0.5, kw, ha="center", va="center", fontsize=6, color="white",
                        bbox=dict(boxstyle="round,pad=0.1", fc=category_color(cat_of.get(kw, ""), cats), ec="none", alpha=0.85))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"frame {t}", fontsize=8)
            if t == 0:
                ax.set_ylabel(name, fontsize=8)
    handles = [Patch(color=category_color(c, cats), label=c) for c in cats]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    fig.suptitle(title or "Top-1 logit-lens keywords at video tokens", fontsize=10)
    return _save(fig, path)


def plot_answer_probability(
    p_true: np.ndarray,
    p_false: np.ndarray,
    layers: Sequence[int],
    path: Optional[Union[str, Path]] = None,
    labels: Optional[Sequence[str]] = None,
    title: str = "Answer probability at the last position by layer",
) -> Figure:
    """True-option vs false-option probability over lens layers: mean and 95% interval over samples.

    Paper: Finding 3 (Map the Flow's methods, "Generation probability").

    Args:
        p_true: ``[n_samples, n_lens]`` probability of the right option.
        p_false: ``[n_samples, n_lens]`` per sample, the mean probability of the wrong options.
        layers: lens layer of each point.
        labels: x tick labels (default the layer numbers).
        path: PNG to write.
    """
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    x = np.asarray(layers)
    n = np.asarray(p_true).shape[0]
    for arr, name, color in ((p_true, "true option", CATEGORY_COLORS["true"]), (p_false, "false options", CATEGORY_COLORS["false"])):
        mean, lo, hi = mean_ci(arr, bounds=PROBABILITY)
        ax.plot(x, mean, color=color, label=name, marker="o", ms=3)
        ax.fill_between(x, lo, hi, color=color, alpha=0.25, lw=0)
    ax.set_xlabel("lens layer (residual stream entering the layer; last = after the final block)")
    ax.set_ylabel("probability (full-vocabulary softmax)")
    if labels is not None and len(labels) <= 40:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
    ax.set_title(f"{title} (n={n}, mean and 95% CI)", fontsize=10)
    ax.legend(frameon=False)
    return _save(fig, path)


def plot_early_exit(exits, path: Optional[Union[str, Path]] = None,
                    title: str = "Accuracy when the answer is read at layer k (logit lens)") -> Figure:
    """Accuracy by lens layer, a line per task (``videolens.lens.early_exit``), each task's exit
    layer marked (the earliest within its tolerance of the final accuracy)."""
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    names = [e.task for e in exits]
    for e in exits:
        color = "black" if e.task == "all" else category_color(e.task, names)
        (line,) = ax.plot(e.layers, e.accuracy, marker="o", ms=3, color=color,
                          lw=2.2 if e.task == "all" else 1.2, label=f"{e.task} (n={e.n}, exit {e.exit_layer})")
        ax.axvline(e.exit_layer, color=line.get_color(), ls=":", lw=0.8)
    ax.set_xlabel("lens layer k (residual stream entering layer k)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=7)
    return _save(fig, path)
