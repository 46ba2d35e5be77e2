"""Peak memory of the logit lens at the paper's scale of positions and vocabulary.

1152 video positions x (n_layers + 1) lens layers x a 32064-token vocabulary, on a random
HookedTransformer of reduced width (the projection cost scales with d_model; the memory of the
scores does not). Each variant runs in a fresh subprocess; the figure is the growth of the peak
resident set size (ru_maxrss) over the process's state after building the model and residuals.
Variants: the lens with chunks of 128 positions, the lens unchunked (one layer at a time), and the
naive computation that materialises all layers x positions x vocabulary before the top-k.

    python benchmarks/lens_memory.py [--layers 2] [--width 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from videolens.lens import logit_lens
variant, L, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
cfg = HookedTransformerConfig(n_layers=L, d_model=d, n_ctx=2048, d_head=32, n_heads=d // 32, d_mlp=4 * d,
                              d_vocab=32064, act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
                              gated_mlp=True, final_rms=True)
model = HookedTransformer(cfg).eval()
P = 1152
cache = {f"blocks.{l}.hook_resid_pre": torch.randn(1, P, d) for l in range(L)}
cache[f"blocks.{L - 1}.hook_resid_post"] = torch.randn(1, P, d)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    if variant == "naive":
        stack = torch.stack([cache[f"blocks.{l}.hook_resid_pre"][0] for l in range(L)] + [cache[f"blocks.{L - 1}.hook_resid_post"][0]])
        probs = model.unembed(model.ln_final(stack)).softmax(-1)  # [L+1, P, V]
        top = probs.topk(5, -1)
    else:
        logit_lens(model, cache, positions=None, k=5, chunk_size=128 if variant == "chunked" else None)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"variant": variant, "extra_peak_MB": (after - before) / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--width", type=int, default=256)
    args = ap.parse_args()
    L, V, P = args.layers, 32064, 1152
    print(f"{P} positions x {L + 1} lens layers x {V} vocabulary, d_model {args.width}")
    print(f"  full fp32 score tensor: {(L + 1) * P * V * 4 / 2**20:.0f} MB; "
          f"one chunk of 128: {128 * V * 4 / 2**20:.1f} MB; one layer: {P * V * 4 / 2**20:.0f} MB")
    for variant in ("chunked", "unchunked", "naive"):
        out = subprocess.run([sys.executable, "-c", CHILD, variant, str(L), str(args.width)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"  {r['variant']:>9}: extra peak RSS {r['extra_peak_MB']:8.1f} MB")


if __name__ == "__main__":
    main()
