"""Knockout sweeps three ways at the paper's layout, side by side in one run (issue 3).

Layout: system prompt + 8x12x12 = 1152 video tokens + question and four options (about 1265
positions), a Llama language model of reduced width (``benchmarks/forward.py``'s ``build``). The
paper's four targets, each pair knocked out in a window of ``--window`` layers around the chosen
centre layers:

1. the paper's method: transformers eager forward with a per-layer float 4D mask ``[1, 1, S, S]``
   (0 allowed, -inf blocked, causal) for every condition, the vision front end rerun each time;
2. plain hooked sweep: ``videolens.knockout.sweep(method="full")`` with TransformerLens' own
   attention (a whole hooked forward per condition);
3. videolens: ``sweep(method="fast")`` with the SDPA attention path (incremental recomputation).

Each method also runs its baseline once (and (2), (3) their vision front end once, in
``model.prepare``); (3)'s clean run is shared by the four targets as in ``videolens flow`` and is
counted in the overall time and, split evenly, in the per-target times. Targets are interleaved
((1), (2), (3) for one target, then the next) so machine load hits all three alike.

    python benchmarks/knockout_sweep.py [--layers 16] [--width 256] [--window 9] [--stride 8] [--device cuda]

``--stride s`` sweeps every s-th centre layer (``s//2, s//2 + s, ...``; 1 = every layer, the
paper's full sweep). Prints each time, the ratios (1)/(3) and (2)/(3) per target and overall, and
the largest option-probability difference between methods; the last line is the overall (1)/(3).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_NAMES = ("cross-frame", "vql-to-ql", "question-and-options-to-last", "vq-to-true-opt")


def float_mask(blocked: torch.Tensor) -> torch.Tensor:
    """``[1, 1, S, S]``: 0 where allowed, -inf where blocked or non-causal (REFERENCE section 2)."""
    S = blocked.shape[0]
    allowed = torch.ones(S, S, dtype=torch.bool, device=blocked.device).tril() & ~blocked
    return torch.zeros(S, S, device=blocked.device).masked_fill(~allowed, float("-inf"))[None, None]


class PaperMethod:
    """transformers eager, per-layer 4D masks through forward pre-hooks, vision rerun per condition."""

    def __init__(self, model, lm, inputs):
        self.model, self.lm, self.inputs = model, lm, inputs
        self.masks = [None] * len(lm.model.layers)
        for i, layer in enumerate(lm.model.layers):
            layer.register_forward_pre_hook(self._pre(i), with_kwargs=True)
        self.ids = torch.tensor([inputs.option_token_ids[L] for L in inputs.layout.letters], device=inputs.tokens.device)

    def _pre(self, i):
        def hook(module, args, kwargs):
            if self.masks[i] is not None:
                kwargs["attention_mask"] = self.masks[i]
            return args, kwargs
        return hook

    def probs(self, blocked, layers):
        inputs, lm = self.inputs, self.lm
        video = self.model.vision(inputs.video.frames)  # the vision front end, every condition
        emb = lm.model.embed_tokens(inputs.tokens.clamp(max=lm.config.vocab_size - 1))
        emb[0, inputs.layout.video_positions] = video.reshape(-1, emb.shape[-1]).to(emb.dtype)
        blocked = blocked.to(emb.device)
        causal = float_mask(torch.zeros_like(blocked))
        ko = float_mask(blocked)
        self.masks = [ko if l in layers else causal for l in range(len(self.masks))]
        logits = lm(inputs_embeds=emb).logits[0, -1]
        return logits.float().softmax(-1)[self.ids].cpu()  # .cpu() waits for the GPU


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=16, help="language model layers (paper: 32; default 16 for CPU)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--window", type=int, default=9)
    ap.add_argument("--stride", type=int, default=8, help="sweep every s-th centre layer (default 8; 1: all)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)

    from forward import build

    from videolens.attention import fast_attention
    from videolens.knockout import TARGETS, knockout_mask, layer_window, sweep
    from videolens.knockout.engine import FastEngine, FullEngine

    with tempfile.TemporaryDirectory() as tmp:
        model, lm, inputs, _ = build(Path(tmp), args.layers, args.width, device=args.device)
        lm.set_attn_implementation("eager")
        sample, L = inputs.sample, model.cfg.n_layers
        centres = list(range(args.stride // 2, L, args.stride))
        letters = inputs.layout.letters
        paper = PaperMethod(model, lm, inputs)

        times = {n: [0.0, 0.0, 0.0] for n in TARGET_NAMES}
        shared = [0.0, 0.0, 0.0]
        t0 = time.perf_counter()
        paper.probs(torch.zeros(inputs.seq_len, inputs.seq_len, dtype=torch.bool), [])  # (1) baseline
        shared[0] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with fast_attention(model, False):
            inp2 = model.prepare(sample)
            clean2 = FullEngine().clean(model, inp2)
        shared[1] = time.perf_counter() - t0
        t0 = time.perf_counter()
        inp3 = model.prepare(sample)
        clean3 = FastEngine().clean(model, inp3)
        shared[2] = time.perf_counter() - t0

        diff13 = diff23 = 0.0
        n_cond = {}
        for name in TARGET_NAMES:
            target = TARGETS[name]
            t0 = time.perf_counter()
            ref = []
            for pair in target.pairs:
                blocked = knockout_mask(inputs.layout, pair)
                for c in centres:
                    ref.append(paper.probs(blocked, layer_window(c, args.window, L)))
            times[name][0] = time.perf_counter() - t0
            t0 = time.perf_counter()
            with fast_attention(model, False):
                plain = sweep(model, inp2, name, window=args.window, method="full", layers=centres, clean=clean2)
            times[name][1] = time.perf_counter() - t0
            t0 = time.perf_counter()
            fast = sweep(model, inp3, name, window=args.window, method="fast", layers=centres, clean=clean3)
            times[name][2] = time.perf_counter() - t0
            n_cond[name] = len(fast)
            for p1, r2, r3 in zip(ref, plain, fast):
                p3 = torch.tensor([r3["ko_probs"][x] for x in letters])
                p2 = torch.tensor([r2["ko_probs"][x] for x in letters])
                diff13 = max(diff13, float((p1 - p3).abs().max()))
                diff23 = max(diff23, float((p2 - p3).abs().max()))
            print(f"  done {name}: {n_cond[name]} conditions", file=sys.stderr, flush=True)

        print(f"layout: S={inputs.seq_len} positions (video {inputs.layout.video_grid}), {L} layers "
              f"({'paper: 32; ' if L != 32 else ''}reduced for this CPU), width {model.cfg.d_model}, "
              f"{model.cfg.n_heads} heads, window {args.window}, centre layers {centres}"
              f"{' (every %d-th; --stride 1 sweeps all)' % args.stride if args.stride > 1 else ''}, "
              f"{torch.get_num_threads()} threads")
        print(f"baselines (once per sample): (1) {shared[0]:.2f} s  (2) {shared[1]:.2f} s  "
              f"(3) {shared[2]:.2f} s (clean run with cache, shared by the 4 targets)")
        print(f"{'target':30s} {'conds':>5s} {'(1) paper':>10s} {'(2) plain':>10s} {'(3) fast':>9s} "
              f"{'(1)/(3)':>8s} {'(2)/(3)':>8s}")
        tot = [shared[i] + sum(t[i] for t in times.values()) for i in range(3)]
        for name in TARGET_NAMES:
            t = [times[name][i] + shared[i] / len(TARGET_NAMES) for i in range(3)]
            print(f"{name:30s} {n_cond[name]:5d} {t[0]:9.2f}s {t[1]:9.2f}s {t[2]:8.2f}s "
                  f"{t[0] / t[2]:7.1f}x {t[1] / t[2]:7.1f}x")
        print(f"{'overall':30s} {sum(n_cond.values()):5d} {tot[0]:9.2f}s {tot[1]:9.2f}s {tot[2]:8.2f}s "
              f"{tot[0] / tot[2]:7.1f}x {tot[1] / tot[2]:7.1f}x")
        print(f"largest option-probability difference: (1) vs (3) {diff13:.2e}, (2) vs (3) {diff23:.2e}")
        print(f"overall (1)/(3): {tot[0] / tot[2]:.1f}x")


if __name__ == "__main__":
    main()
