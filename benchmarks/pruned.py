"""Pathway-pruned inference against the masked run it replaces, side by side in one run (issue 22).

The paper's layout (system prompt + 8x12x12 = 1152 video tokens + question and options, about 1265
positions) on a Llama of ``--layers`` layers and reduced width (``benchmarks/forward.py``'s
``build``), under the prunable variant of the 7B spec (``llava-next-7b-video-ft+prunable``: the
video's edges to the text after it blocked after layer 19, the spec's last video_to_question layer):

1. masked: one forward of every layer on every position with the spec's masks
   (``run_with_hooks`` + ``PathwayMasker``, as ``videolens pathways``);
2. pruned: ``pruned_logits``: the same masks, the video rows dropped from the prune layer on.

Medians of ``--reps`` interleaved repetitions; the largest logit difference between them is
printed; the last line is the ratio (1)/(2).

    python benchmarks/pruned.py [--layers 32] [--width 256] [--reps 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--spec", default="llava-next-7b-video-ft")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)

    from forward import build
    from forward import sync as wait

    from videolens.pathways.hooks import PathwayMasker
    from videolens.pathways.pruned import kept_positions, prunable, prune_layer, pruned_logits

    def sync():
        wait(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        model, _, inputs, _ = build(Path(tmp), args.layers, args.width, device=args.device)
        spec = prunable(args.spec)
        plan = spec.plan(model.cfg.n_layers)
        cut = prune_layer(inputs.layout, plan)

        def masked():
            out = model.run_with_hooks(inputs, fwd_hooks=PathwayMasker(inputs.layout, plan).fwd_hooks())[:, -1:]
            sync()
            return out

        def pruned():
            out = pruned_logits(model, inputs, plan)
            sync()
            return out

        a, b = masked(), pruned()  # warm-up, and the outputs compared
        times = [[], []]
        for _ in range(args.reps):
            for i, fn in enumerate((masked, pruned)):
                t0 = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - t0)
        med = [statistics.median(t) for t in times]
        S, kept, L = inputs.seq_len, len(kept_positions(inputs.layout)), model.cfg.n_layers
        work = (L * S) / (cut * S + (L - cut) * kept) if cut is not None else 1.0
        print(f"layout: S={S} positions (video {inputs.layout.video_grid}), {L} layers, width {model.cfg.d_model}, "
              f"spec {spec.name}: video rows dropped from layer {cut} on ({kept} rows stay); {args.device}, "
              f"{torch.get_num_threads()} threads, medians of {args.reps}")
        print(f"(1) masked run  {med[0] * 1000:8.1f} ms")
        print(f"(2) pruned run  {med[1] * 1000:8.1f} ms   rows x layers: {work:.2f}x fewer")
        print(f"largest last-position logit difference: {float((a - b).abs().max()):.2e}")
        print(f"(1)/(2): {med[0] / med[1]:.2f}x")


if __name__ == "__main__":
    main()
