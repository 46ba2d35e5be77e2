"""Loading a checkpoint: videolens' ``HookedVideoLLM.from_pretrained`` next to transformers'
``LlavaForConditionalGeneration.from_pretrained`` on the same files, in one run.

The checkpoint is a LLaVA (transformers layout, bf16) with a Llama-7B-width text model
(4096 wide, 11008 MLP, 32 heads) of ``--layers`` layers and a CLIP-L/336-sized tower (1024 wide,
24 layers, patch 14), as the paper's models have, so it fits this machine.
``--full-size 7b``: the whole 7B (Vicuna-7B's 32 layers and 32064-token vocabulary, CLIP-L/336 with
its 4096-wide MLP and 16 heads: 7.06 B parameters, about 13.2 GiB in bf16), written shard by shard
(at most ``--shard-gb`` each, random weights) without building the model in memory, so a 24 GiB
machine holds it.
Each load runs in a fresh process (peak RSS is that process's); loads alternate, medians over
``--reps``. Both loaders map the safetensors files and read a weight when it is first used, so
each process also runs a first forward (4 text tokens) and the time to its end is the comparison
that counts; ``--cold`` empties the OS page cache before each load (root on Linux), so the files
come from disk. The last line is the time ratio videolens / transformers.

    python benchmarks/load.py [--layers 2] [--reps 2] [--device cuda]
    python benchmarks/load.py --full-size 7b [--folder /tmp/llava7b] [--keep] [--reps 2] [--cold]
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
base = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))  # torch imported
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
# then the first forward (4 text tokens): what reads the weights when the load only mapped the files
t1 = time.perf_counter()
ids = torch.tensor([[1, 5, 6, 7]], device=device)
with torch.no_grad():
    if which == "videolens":
        model(ids)
    else:
        model(input_ids=ids)
if device.startswith("cuda"):
    torch.cuda.synchronize()
touched = time.perf_counter() - t1
# VmHWM: this process's peak resident set (ru_maxrss would carry the parent's peak across exec)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"s": dt, "read_s": touched, "peak_rss_gb": hwm / 2**20, "base_rss_gb": base / 2**20}))
"""


def drop_page_cache() -> bool:
    """Empty the OS page cache (root on Linux), so the next load reads the files from disk; False when not allowed."""
    import os

    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def load_once(which: str, path: Path, device: str = "cpu") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(path), device], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{which} failed to load {path}:\n{out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_full_size_7b(folder: Path, shard_gb: float = 2.0, seed: int = 0) -> Path:
    """A LLaVA-1.5-style 7B checkpoint in transformers' layout (bf16, sharded safetensors with their
    index, random N(0, 0.02) weights and unit norms), written one shard at a time: the model is built
    on the meta device only to list its tensors, so peak memory is one shard."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from videolens.testing import PLACEHOLDER, tiny_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vc = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                          image_size=336, patch_size=14, projection_dim=768)
    tc = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
                     tie_word_embeddings=False)
    cfg = LlavaConfig(vision_config=vc.to_dict(), text_config=tc.to_dict(), image_token_id=PLACEHOLDER, dtype="bfloat16",
                      architectures=["LlavaForConditionalGeneration"])
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlavaForConditionalGeneration(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    limit, shards, cur, size = shard_gb * 2**30, [], [], 0
    for k, shape in shapes.items():
        n = 2 * shape.numel()
        if cur and size + n > limit:
            shards.append(cur)
            cur, size = [], 0
        cur.append(k)
        size += n
    shards.append(cur)
    weight_map = {}
    for i, keys in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for k in keys:
            if k.endswith("norm.weight") or "layer_norm" in k or "layrnorm" in k:
                tensors[k] = torch.ones(shapes[k], dtype=torch.bfloat16)
            else:
                tensors[k] = (0.02 * torch.randn(shapes[k], generator=g)).to(torch.bfloat16)
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys})
        del tensors
    total = sum(2 * s.numel() for s in shapes.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}, indent=1))
    cfg.save_pretrained(str(folder))
    tiny_tokenizer("<image>", PLACEHOLDER).save_pretrained(str(folder))
    return folder


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda: with cuda, peak host RSS shows whether the weights "
                                                    "pass through host memory")
    ap.add_argument("--full-size", choices=["7b"], default=None, help="the whole 7B, written shard by shard")
    ap.add_argument("--folder", default=None, help="--full-size: where to write it (default a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="--full-size: keep the folder (reused when it holds one)")
    ap.add_argument("--shard-gb", type=float, default=2.0)
    ap.add_argument("--cold", action="store_true", help="empty the page cache before each load (needs root)")
    args = ap.parse_args(argv)
    import shutil
    import time

    import torch

    from videolens.testing import make_tiny_llava_hf

    tmp = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="videolens-load-"))
    try:
        if args.full_size:
            ck = tmp / "llava-7b"
            if not (ck / "model.safetensors.index.json").is_file():
                t0 = time.perf_counter()
                write_full_size_7b(ck, args.shard_gb)
                print(f"wrote {ck} in {time.perf_counter() - t0:.0f} s")
            what = "the full 7B (32 layers, vocabulary 32064, CLIP-L/336)"
        else:
            ck = make_tiny_llava_hf(tmp / "llava7bw", dtype=torch.bfloat16, randomize=False, n_layers=args.layers,
                                    d_model=4096, d_mlp=11008, n_heads=32, n_kv_heads=32, max_pos=4096, d_vision=1024,
                                    vision_layers=24, image_size=336, patch_size=14)
            what = f"Llama-7B width, {args.layers} layers"
        files = list(ck.glob("*.safetensors"))
        size_gb = sum(f.stat().st_size for f in files) / 2**30
        shard_gb = max(f.stat().st_size for f in files) / 2**30
        runs = {"transformers": [], "videolens": []}
        cold = args.cold
        for _ in range(args.reps):
            for which in runs:
                if cold:
                    cold = drop_page_cache()
                runs[which].append(load_once(which, ck, args.device))
        print(f"checkpoint: {size_gb:.2f} GiB bf16 in {len(files)} file(s) (largest {shard_gb:.2f} GiB), {what}")
        print(f"page cache: {'emptied before each load' if cold else 'warm (files just written or read)'}")
        med, tot = {}, {}
        for which, rs in runs.items():
            med[which] = statistics.median(r["s"] for r in rs)
            tot[which] = statistics.median(r["s"] + r["read_s"] for r in rs)
            rss = max(r["peak_rss_gb"] for r in rs)
            base = min(r["base_rss_gb"] for r in rs)
            print(f"{which:12s} load {med[which]:6.2f} s, to the end of the first forward {tot[which]:6.2f} s   peak RSS "
                  f"{rss:5.2f} GiB ({rss / size_gb:.2f}x the checkpoint; {rss - base:5.2f} GiB above the process before)")
        print(f"videolens / transformers, load: {med['videolens'] / med['transformers']:.2f}x; load and first forward: "
              f"{tot['videolens'] / tot['transformers']:.2f}x (goal <= 1.2)")
    finally:
        if not (args.keep or args.folder):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
