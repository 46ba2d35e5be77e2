"""``videolens lens``: logit lens over video tokens with keyword tracking (paper Finding 2).

Over a TVBench-format file (``--data FILE --video-root DIR``) or one video (``--video FILE
--question ... --candidates ...``). Writes ``OUT/lens.jsonl`` (resumable: finished samples are
skipped on a rerun with the same settings) and figures ``OUT/keyword_frequency.png`` and
``OUT/word_map_*.png``. The per-sample loop is ``videolens.running.samples.run_samples``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .common import (add_model_arguments, add_sample_arguments, load_model, load_samples, non_negative_int,
                     positive_int, run_config, run_frames, sharded_samples)

NAME = "lens"
HELP = "logit lens over video tokens: keyword hits per layer bin, frame and cell, with figures"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60]


# ---- lens ------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_sample_arguments(p)
    p.add_argument("--positions", default="video",
                   help="comma-separated token groups read by the lens (default video; e.g. video,last)")
    p.add_argument("--layers", default="all", help="lens layers, e.g. all, 0-4,10,final (default all)")
    p.add_argument("--k", type=positive_int, default=5, help="top-k tokens kept per layer and position")
    p.add_argument("--mode", default="final_norm", choices=["final_norm", "raw_embed"],
                   help="final_norm: ln_final then W_U (TransformerLens); raw_embed: residual x W_E^T, no norm "
                        "(the paper's released code)")
    p.add_argument("--keywords", nargs="+", default=["action_sequence"],
                   help="built-in keyword set names or JSON/text files (default action_sequence)")
    p.add_argument("--bin-size", type=positive_int, default=5, help="lens layers per (non-overlapping) bin in figures")
    p.add_argument("--chunk-size", type=positive_int, default=128, help="positions projected at once (memory bound)")
    p.add_argument("--save-topk", action="store_true", help="also record the top-k tokens of every layer and position")
    p.add_argument("--word-maps", type=non_negative_int, default=1, help="word-map figures for the first N samples (default 1)")


def run(args) -> int:
    from videolens.lens import KeywordMatcher, layer_bins, load_keywords, merge_keyword_sets, resolve_lens_layers
    from videolens.lens.records import LensSettings, binned_from_records, lens_records
    from videolens.plots import lens as plots

    settings = LensSettings(positions=args.positions, layers=args.layers, k=args.k, mode=args.mode,
                            chunk_size=args.chunk_size, save_topk=args.save_topk)
    samples = load_samples(args)
    kwset = merge_keyword_sets([load_keywords(k) for k in args.keywords])
    model = load_model(args)
    L = model.cfg.n_layers
    sel_layers = resolve_lens_layers(args.layers, L)  # fails early on a bad --layers
    matcher = KeywordMatcher.from_tokenizer(kwset, model.tokenizer)
    if matcher.skipped:
        print(f"{len(matcher.skipped)} keyword(s) cannot be matched with this tokenizer: "
              + ", ".join(f"{w} ({why})" for _, w, why in matcher.skipped[:10]) + (" ..." if len(matcher.skipped) > 10 else ""))
    out = Path(args.out)
    config = run_config(args, model, NAME, **settings.header(),
                        keywords={c: list(w) for c, w in kwset.categories.items()})
    done = sharded_samples(args, model, out, "lens.jsonl", config, samples,
                           lambda s, inp: lens_records(model, inp, matcher, settings), "lens")
    if done is None:  # a torchrun rank other than 0: its share is written; rank 0 merges and draws
        return 0
    records, counts = done
    binned = binned_from_records(records, L, args.bin_size)
    n_ok = len({r["sample_id"] for r in records if r.get("kind") == "sample"})
    for name, v in binned.items():
        freq = "  ".join(f"{c} {v['hits'][c] / max(1, v['n']):.4f}" for c in v["hits"])
        print(f"  {name:>8}: {freq}")
    if not args.no_figures and n_ok:
        plots.plot_keyword_frequency(binned, out / "keyword_frequency.png", n_samples=n_ok)
        by_id = {s.sample_id: s for s in samples}
        shown = 0
        for sid in dict.fromkeys(r["sample_id"] for r in records if r.get("kind") == "sample"):
            if shown >= args.word_maps or sid not in by_id:
                continue
            meta = next(r for r in records if r["sample_id"] == sid and r.get("kind") == "sample")
            hits = [r for r in records if r["sample_id"] == sid and r.get("kind") == "hit"]
            frames = by_id[sid].load(run_frames(args, model)).frames
            grid = tuple(meta["video_grid"])
            plots.plot_word_map(frames, hits, grid, layer_bins(L, args.bin_size, sel_layers),
                                out / f"word_map_{shown}_{safe_name(sid)}.png", title=f"{sid}: top-1 lens keywords")
            shown += 1
        print(f"figures in {out}")
    return 1 if samples and counts["errors"] == len(samples) else 0
