"""Attention views at the paper's layout: 8x12x12 = 1152 video tokens, about 1270 positions.

A random PLLaVA-style checkpoint with the paper's video grid and 32 heads (reduced width and
depth). Times each step of ``videolens.viz`` next to a plain forward pass of the same model, in one
run, and prints the size of what is serialised against the full pattern of one layer
(heads x S x S values), which is never built into a page.

    python benchmarks/viz_paper_layout.py [--layers 4] [--width 1024] [--heads 32] [--reps 3]

The views run the model with hooks on ``hook_pattern`` (TransformerLens' plain attention in those
layers), so compare them with ``run_with_cache`` of the patterns; the pooling and the page itself
are timed apart ("from that cache").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch



def build(tmp: Path, layers: int, width: int, heads: int):
    import videolens as vl
    from videolens.testing import make_tiny_pllava, write_clip

    # CLIP 48 px / patch 4: 12x12 patches a frame; a Llama of the given depth and width
    ck = make_tiny_pllava(tmp / "bench", pooling_shape=(8, 12, 12), n_layers=layers, max_pos=2048, randomize=False,
                          d_model=width, d_mlp=width * 2, n_heads=heads, n_kv_heads=heads, image_size=48,
                          patch_size=4, d_vision=32, vision_layers=2)
    model = vl.HookedVideoLLM.from_pretrained(ck, device="cpu")
    clip = write_clip(tmp / "clip.mp4", n_frames=16)
    sample = vl.VideoQA(video=str(clip), question="Which direction does the purple sphere move in the video?",
                        candidates=["Up and to the right.", "Up and to the left.", "Down and to the left.",
                                    "Down and to the right."], answer="Up and to the right.")
    return model, model.prepare(sample)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    from videolens.viz import compare_knockout, heads_panel, page_html, plot_overlay, video_attention, video_tokens_panel

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, inputs = build(tmp, args.layers, args.width, args.heads)
        S, H, nl = inputs.seq_len, model.cfg.n_heads, model.cfg.n_layers
        out = {}
        names = [f"blocks.{l}.attn.hook_pattern" for l in range(nl)]
        _, cache = model.run_with_cache(inputs, names_filter=lambda n: n in names)

        def render_from_cache():
            v = video_attention(model, inputs, query="question", layers=range(nl), video="frame", cache=cache)
            w = video_attention(model, inputs, query="last", layers=nl - 1, video="patch", cache=cache)
            out["cached"] = page_html([heads_panel(v), video_tokens_panel(w)])

        def frames_view():
            v = video_attention(model, inputs, query="question", layers=range(nl), video="frame")
            out["frames"] = page_html([heads_panel(v)])

        def patch_view():
            v = video_attention(model, inputs, query="last", layers=nl - 1, video="patch")
            out["patches"] = page_html([video_tokens_panel(v)])

        def knockout_side_by_side():
            views = compare_knockout(model, inputs, "video->video[cross_frame]", query="last", layers=nl - 1,
                                     heads="mean", video="patch")
            out["ko"] = page_html([video_tokens_panel(v, title=k) for k, v in views.items()])
            fig = plot_overlay(views, inputs.video.frames, path=tmp / "ko.png")
            import matplotlib.pyplot as plt

            plt.close(fig)

        steps = {
            "plain forward (reference)": lambda: model(inputs),
            "run_with_cache of every pattern (TransformerLens way)": lambda: model.run_with_cache(
                inputs, names_filter=lambda n: n in names),
            "pool + render both views from that cache (no forward)": render_from_cache,
            "per-frame heads view, all layers, question -> video (+page)": frames_view,
            "per-patch view, last layer, last -> video (+page)": patch_view,
            "knockout side by side: 2 runs, pages, PNG overlay": knockout_side_by_side,
        }
        for fn in steps.values():  # warm-up
            fn()
        times = {k: [] for k in steps}
        for _ in range(args.reps):  # interleaved repetitions
            for k, fn in steps.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        print(f"layout: S={S} positions, video {inputs.layout.video_grid}, {nl} layers, {H} heads, width "
              f"{args.width}, {torch.get_num_threads()} threads, median of {args.reps}")
        ref = statistics.median(times["plain forward (reference)"])
        for k, v in times.items():
            m = statistics.median(v)
            print(f"{k:62s} {m:7.2f} s  ({m / ref:4.1f}x a forward pass)")
        full = H * S * S
        for k in ("frames", "patches", "ko", "cached"):
            print(f"page '{k}': {len(out[k]) / 1e6:.2f} MB (circuitsvis bundle about 1.3 MB included)")
        print(f"one layer's full pattern would be {full / 1e6:.1f}M values (~{full * 20 / 1e9:.1f} GB as JSON); "
              "never serialised")


if __name__ == "__main__":
    main()
