"""Knockout sweeps three ways at the paper's layout, side by side in one run (issue 3).

Layout: system prompt + 8x12x12 = 1152 video tokens + question and four options (about 1265
positions), a Llama language model of reduced width (``benchmarks/forward.py``'s ``build``). The
paper's four targets, each pair knocked out in a window of ``--window`` layers around the chosen
centre layers:

1. the paper's method: transformers eager forward with a per-layer float 4D mask ``[1, 1, S, S]``
   (0 allowed, -inf blocked, causal) for every condition, the vision front end rerun each time;
2. plain hooked sweep: ``videolens.knockout.sweep(method="full")`` with TransformerLens' own
   attention (a whole hooked forward per condition);
3. videolens: ``sweep(method="fast")`` with the SDPA attention path (incremental recomputation),
   one condition at a time;
4. videolens batched: the same with ``batch_conditions=N`` (conditions sharing their first
   blocked query run as one batch, ``videolens.knockout.batched``);
5. the careful transformers user (``benchmarks/paper_scale.py``'s (b)): transformers SDPA, the video
   features computed once, ``--peer-batch`` conditions per forward with per-row float 4-D masks.

Each method also runs its baseline once (and (2), (3) their vision front end once, in
``model.prepare``); (3)'s clean run is shared by the four targets as in ``videolens flow`` and is
counted in the overall time and, split evenly, in the per-target times. Targets are interleaved
((1), (2), (3) for one target, then the next) so machine load hits all three alike.

    python benchmarks/knockout_sweep.py [--layers 16] [--width 256] [--window 9] [--stride 8] [--device cuda]
    python benchmarks/knockout_sweep.py --paper [--width 256] [--plain] [--dtype bfloat16] [--device cuda]

``--stride s`` sweeps every s-th centre layer (``s//2, s//2 + s, ...``; 1 = every layer, the
paper's full sweep). ``--paper``: 32 layers, every centre layer, window 9, the paper's 352
conditions, at the width given (reduced, so it runs on a CPU in minutes); (2) is skipped there
unless ``--plain``. Prints each time, the ratios per target and overall, and the largest
option-probability difference from (3); the last line is the overall (1)/(4), the speedup over the
paper's method with batched conditions.
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
    """``[1, 1, S, S]`` float32: 0 where allowed, -inf where blocked or non-causal (``paper_scale.float_mask``)."""
    from paper_scale import float_mask as square

    return square(blocked, torch.float32)[None, None]


class PaperMethod:
    """transformers eager, per-layer 4D masks through forward pre-hooks, vision rerun per condition."""

    def __init__(self, model, lm, inputs):
        from paper_scale import LayerMasks

        self.model, self.lm, self.inputs = model, lm, inputs
        self.layer_masks = LayerMasks(lm.model.layers)
        self.ids = torch.tensor([inputs.option_token_ids[L] for L in inputs.layout.letters], device=inputs.tokens.device)

    def probs(self, blocked, layers):
        inputs, lm = self.inputs, self.lm
        video = self.model.vision(inputs.video.frames)  # the vision front end, every condition
        emb = lm.model.embed_tokens(inputs.tokens.clamp(max=lm.config.vocab_size - 1))
        emb[0, inputs.layout.video_positions] = video.reshape(-1, emb.shape[-1]).to(emb.dtype)
        blocked = blocked.to(emb.device)
        causal = float_mask(torch.zeros_like(blocked))
        ko = float_mask(blocked)
        self.layer_masks.masks = [ko if l in layers else causal for l in range(len(self.layer_masks.masks))]
        logits = lm(inputs_embeds=emb).logits[0, -1]
        return logits.float().softmax(-1)[self.ids].cpu()  # .cpu() waits for the GPU


@torch.no_grad()  # as a decorator: a caller's grad mode comes back (tests call main in-process)
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=16, help="language model layers (paper: 32; default 16 for CPU)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--window", type=int, default=9)
    ap.add_argument("--stride", type=int, default=8, help="sweep every s-th centre layer (default 8; 1: all)")
    ap.add_argument("--batch-conditions", type=int, default=64,
                    help="conditions per batch for method (4) (videolens flow --batch-conditions; default 64)")
    ap.add_argument("--paper", action="store_true",
                    help="the paper's full sweep: 32 layers, every centre layer, window 9 (352 conditions); "
                         "skips (2) unless --plain")
    ap.add_argument("--plain", action="store_true", help="with --paper: run (2) as well")
    ap.add_argument("--paper-every", type=int, default=1, metavar="K",
                    help="run (1) on every K-th condition only and scale its time to all of them (its cost per "
                         "condition is the same whole forward; default 1: all)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="weights and activations of every method (default float32)")
    ap.add_argument("--masked-sdpa", default=None, choices=["torch", "efficient", "math", "cudnn"],
                    help="SDPA backend for masked calls on CUDA (videolens.hooked.attention.MASKED_SDPA_BACKENDS; default: "
                         "videolens' (memory-efficient, then math); torch: torch's own choice)")
    ap.add_argument("--peer-batch", type=int, default=16, metavar="B",
                    help="conditions per forward for method (5), the careful transformers user (default 16)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.masked_sdpa:
        from torch.nn.attention import SDPBackend

        import videolens.hooked.attention as attention

        attention.MASKED_SDPA_BACKENDS = None if args.masked_sdpa == "torch" else [
            {"efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH,
             "cudnn": SDPBackend.CUDNN_ATTENTION}[args.masked_sdpa]]
    if args.paper:
        args.layers, args.stride, args.window = 32, 1, 9
    run_plain = args.plain or not args.paper
    dtype = getattr(torch, args.dtype)

    from forward import build
    from forward import sync as wait
    from paper_scale import Built, careful_user

    from videolens.hooked.attention import fast_attention
    from videolens.hooked.edges import blocked_mask
    from videolens.knockout import TARGETS, layer_window, sweep
    from videolens.knockout.engine import FastEngine, FullEngine

    def sync():
        wait(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        model, lm, inputs, _ = build(Path(tmp), args.layers, args.width, device=args.device, dtype=dtype)
        lm.set_attn_implementation("eager")
        sample, L = inputs.sample, model.cfg.n_layers
        centres = list(range(args.stride // 2, L, args.stride))
        letters = inputs.layout.letters
        paper = PaperMethod(model, lm, inputs)
        M = 5  # (1) paper, (2) plain hooked, (3) fast one by one, (4) fast batched, (5) careful transformers user
        peer = Built(None, {}, lm.model, lm.lm_head, {})
        ids = torch.tensor([inputs.option_token_ids[x] for x in letters], device=args.device)

        times = {n: [0.0] * M for n in TARGET_NAMES}
        shared = [0.0] * M
        t0 = time.perf_counter()
        paper.probs(torch.zeros(inputs.seq_len, inputs.seq_len, dtype=torch.bool), [])  # (1) baseline
        shared[0] = time.perf_counter() - t0
        if run_plain:
            t0 = time.perf_counter()
            with fast_attention(model, False):
                inp2 = model.prepare(sample)
                clean2 = FullEngine().clean(model, inp2)
            sync()
            shared[1] = time.perf_counter() - t0
        for m in (2, 3):
            t0 = time.perf_counter()
            inp3 = model.prepare(sample)
            clean3 = FastEngine().clean(model, inp3)
            sync()
            shared[m] = time.perf_counter() - t0

        t0 = time.perf_counter()
        embeds = model.run_with_cache(inp3, names_filter="hook_embed")[1]["hook_embed"]  # (5): the video features once
        sync()
        shared[4] = time.perf_counter() - t0
        diff = {1: 0.0, 2: 0.0, 4: 0.0, 5: 0.0}  # largest option-probability difference of (1), (2), (4), (5) from (3)
        n_cond = {}
        for name in TARGET_NAMES:
            target = TARGETS[name]
            t0 = time.perf_counter()
            ref, k = {}, 0
            for pair in target.pairs:
                blocked = blocked_mask(inputs.layout, pair)
                for c in centres:
                    if k % args.paper_every == 0:
                        ref[k] = paper.probs(blocked, layer_window(c, args.window, L))
                    k += 1
            times[name][0] = (time.perf_counter() - t0) * k / len(ref)  # scaled when --paper-every > 1
            plain = None
            if run_plain:
                t0 = time.perf_counter()
                with fast_attention(model, False):
                    plain = sweep(model, inp2, name, window=args.window, method="full", layers=centres, clean=clean2)
                times[name][1] = time.perf_counter() - t0
            t0 = time.perf_counter()
            fast = sweep(model, inp3, name, window=args.window, method="fast", layers=centres, clean=clean3,
                         batch_conditions=1)  # one by one (the default batches)
            times[name][2] = time.perf_counter() - t0
            t0 = time.perf_counter()
            batched = sweep(model, inp3, name, window=args.window, method="fast", layers=centres, clean=clean3,
                            batch_conditions=args.batch_conditions)
            times[name][3] = time.perf_counter() - t0
            t0 = time.perf_counter()
            conds = [(blocked_mask(inputs.layout, pair).to(args.device), frozenset(layer_window(c, args.window, L)))
                     for pair in target.pairs for c in centres]
            careful, _ = careful_user(peer, embeds, conds, ids, args.peer_batch, dtype)
            sync()
            times[name][4] = time.perf_counter() - t0
            n_cond[name] = len(fast)

            def probs(r):
                return torch.tensor([r["ko_probs"][x] for x in letters])

            for i, r3 in enumerate(fast):
                p3 = probs(r3)
                if i in ref:
                    diff[1] = max(diff[1], float((ref[i].float() - p3).abs().max()))
                diff[4] = max(diff[4], float((probs(batched[i]) - p3).abs().max()))
                diff[5] = max(diff[5], float((careful[i].cpu().double() - p3.double()).abs().max()))
                if plain is not None:
                    diff[2] = max(diff[2], float((probs(plain[i]) - p3).abs().max()))
            print(f"  done {name}: {n_cond[name]} conditions", file=sys.stderr, flush=True)

        print(f"layout: S={inputs.seq_len} positions (video {inputs.layout.video_grid}), {L} layers "
              f"({'paper: 32; ' if L != 32 else ''}reduced for this CPU), width {model.cfg.d_model}, "
              f"{model.cfg.n_heads} heads, window {args.window}, centre layers {centres}"
              f"{' (every %d-th; --stride 1 sweeps all)' % args.stride if args.stride > 1 else ''}, "
              f"{args.dtype}, device {args.device}, {torch.get_num_threads()} threads"
              f"{', masked SDPA: ' + args.masked_sdpa if args.masked_sdpa else ''}")
        print(f"baselines (once per sample): (1) {shared[0]:.2f} s  (2) {shared[1]:.2f} s  (3) {shared[2]:.2f} s  "
              f"(4) {shared[3]:.2f} s (clean run with cache, shared by the 4 targets)  (5) {shared[4]:.2f} s (embeddings)")
        if args.paper_every > 1:
            print(f"(1) ran every {args.paper_every}-th condition; its times are scaled to all conditions")
        print(f"(4) runs up to {args.batch_conditions} conditions per batch (--batch-conditions)"
              f"{'' if run_plain else '; (2) not run (--paper without --plain)'}")
        print(f"(5) runs up to {args.peer_batch} conditions per forward (--peer-batch)")
        print(f"{'target':30s} {'conds':>5s} {'(1) paper':>10s} {'(2) plain':>10s} {'(3) fast':>9s} {'(4) batch':>10s} "
              f"{'(5) peer':>9s} {'(1)/(3)':>8s} {'(1)/(4)':>8s} {'(3)/(4)':>8s} {'(2)/(4)':>8s} {'(5)/(4)':>8s}")

        def row(label, n, t):
            r2 = f"{t[1] / t[3]:7.1f}x" if run_plain else "      - "
            print(f"{label:30s} {n:5d} {t[0]:9.2f}s {t[1]:9.2f}s {t[2]:8.2f}s {t[3]:9.2f}s {t[4]:8.2f}s "
                  f"{t[0] / t[2]:7.1f}x {t[0] / t[3]:7.1f}x {t[2] / t[3]:7.1f}x {r2} {t[4] / t[3]:7.1f}x")

        for name in TARGET_NAMES:
            row(name, n_cond[name], [times[name][i] + shared[i] / len(TARGET_NAMES) for i in range(M)])
        tot = [shared[i] + sum(t[i] for t in times.values()) for i in range(M)]
        row("overall", sum(n_cond.values()), tot)
        # the work each method does, in rows x layers recomputed: the ceiling of any speedup that
        # comes from skipping work alone (the rest is launches and kernels)
        S = inputs.seq_len
        fast_work = sum((L - layer_window(c, args.window, L)[0]) * (S - blocked_mask(inputs.layout, pair).any(-1)
                                                                     .nonzero()[0, 0].item())
                        for name in TARGET_NAMES for pair in TARGETS[name].pairs for c in centres)
        paper_work = sum(n_cond.values()) * L * S
        print(f"work (rows x layers): (1) {paper_work:,}  (3)/(4) {fast_work:,}  ratio {paper_work / fast_work:.1f}x "
              f"(the ceiling from skipped work alone; (1) also reruns the vision front end)")
        print(f"largest option-probability difference from (3): (1) {diff[1]:.2e}, "
              f"(2) {diff[2] if run_plain else float('nan'):.2e}, (4) {diff[4]:.2e}, (5) {diff[5]:.2e}")
        print(f"overall (1)/(3): {tot[0] / tot[2]:.1f}x")
        print(f"overall (5)/(4), the careful transformers user over videolens batched: {tot[4] / tot[3]:.1f}x")
        print(f"overall (1)/(4): {tot[0] / tot[3]:.1f}x")


if __name__ == "__main__":
    main()
