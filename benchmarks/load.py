"""Loading a checkpoint: videolens' ``HookedVideoLLM.from_pretrained`` next to transformers'
``LlavaForConditionalGeneration.from_pretrained`` on the same files, in one run.

The checkpoint is a LLaVA (transformers layout, bf16) with a Llama-7B-width text model
(4096 wide, 11008 MLP, 32 heads) of ``--layers`` layers and a CLIP-L/336-sized tower (1024 wide,
24 layers, patch 14), as the paper's models have, so it fits this machine.
Each load runs in a fresh process (peak RSS is that process's); loads alternate, medians over
``--reps``. The last line is the time ratio videolens / transformers.

    python benchmarks/load.py [--layers 2] [--reps 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
import torch
which, path, device = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
if which == "videolens":
    import videolens as vl
    t0 = time.perf_counter()
    model = vl.HookedVideoLLM.from_pretrained(path, device=device, dtype=torch.bfloat16, pooling_shape=(4, 4, 4))
else:
    from transformers import LlavaForConditionalGeneration
    t0 = time.perf_counter()
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.bfloat16, device_map=device)
if device.startswith("cuda"):
    torch.cuda.synchronize()
dt = time.perf_counter() - t0
# VmHWM: this process's peak resident set (ru_maxrss would carry the parent's peak across exec)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"s": dt, "peak_rss_gb": hwm / 2**20}))
"""


def load_once(which: str, path: Path, device: str = "cpu") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(path), device], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda: with cuda, peak host RSS shows whether the weights "
                                                    "pass through host memory")
    args = ap.parse_args(argv)
    import torch

    from videolens.testing import make_tiny_llava_hf

    with tempfile.TemporaryDirectory() as tmp:
        ck = make_tiny_llava_hf(Path(tmp) / "llava7bw", dtype=torch.bfloat16, randomize=False, n_layers=args.layers,
                                d_model=4096, d_mlp=11008, n_heads=32, n_kv_heads=32, max_pos=4096, d_vision=1024,
                                vision_layers=24, image_size=336, patch_size=14)
        size_gb = sum(f.stat().st_size for f in ck.glob("*.safetensors")) / 2**30
        runs = {"transformers": [], "videolens": []}
        for _ in range(args.reps):
            for which in runs:
                runs[which].append(load_once(which, ck, args.device))
        print(f"checkpoint: {size_gb:.2f} GiB bf16, Llama-7B width, {args.layers} layers")
        med = {}
        for which, rs in runs.items():
            med[which] = statistics.median(r["s"] for r in rs)
            rss = max(r["peak_rss_gb"] for r in rs)
            print(f"{which:12s} load {med[which]:6.2f} s   peak RSS {rss:5.2f} GiB ({rss / size_gb:.2f}x the checkpoint)")
        print(f"videolens / transformers load time: {med['videolens'] / med['transformers']:.2f}x (goal <= 2)")


if __name__ == "__main__":
    main()
