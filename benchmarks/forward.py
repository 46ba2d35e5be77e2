"""Hooked forward vs transformers forward at the paper's layout (REFERENCE sections 2-3).

System prompt + 8x12x12 = 1152 video tokens + question and options (about 1270 positions), a
Llama language model of reduced width. Both models get the same input embeddings; times are
medians of interleaved repetitions in one run (these machines are noisy). The last line is the
ratio hooked / transformers-SDPA (goal <= 1.3).

    python benchmarks/forward.py [--layers 8] [--width 256] [--reps 5] [--family internvl]

``--family internvl``: Mini-InternVL's layout instead: a Phi-3 with LongRoPE (its tables switched
per forward) behind 8x16x16 = 2048 video tokens from InternViT at 448 px (about 2175 positions).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch



def sync(device: str) -> None:
    """Wait for the device (a timing's end)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def build(tmp: Path, layers: int, width: int, family: str = "pllava", device: str = "cpu", dtype=torch.float32):
    import videolens as vl
    from videolens.testing import make_tiny_internvl, make_tiny_pllava, reference_language_model, write_clip

    if family == "internvl":  # InternViT 448 px -> 16x16 tokens a frame; Phi-3 (LongRoPE, original 4096)
        ck = make_tiny_internvl(tmp / "bench", image_size=448, n_layers=layers, max_pos=8192, original_max_positions=4096,
                                randomize=False, d_model=width, d_mlp=width * 11 // 4, n_heads=width // 32)
    else:  # CLIP 48 px / patch 4: 12x12 patches a frame; a Llama of the given depth and width
        ck = make_tiny_pllava(tmp / "bench", pooling_shape=(8, 12, 12), n_layers=layers, max_pos=2048, randomize=False,
                              d_model=width, d_mlp=width * 11 // 4, n_heads=width // 32, n_kv_heads=width // 32,
                              image_size=48, patch_size=4, d_vision=32, vision_layers=2)
    model = vl.HookedVideoLLM.from_pretrained(ck, device=device, dtype=dtype)
    lm = reference_language_model(ck).to(device, dtype)
    video = None
    if device == "cpu":
        try:
            video = str(write_clip(tmp / "clip.mp4", n_frames=16))
        except (ValueError, RuntimeError, ImportError):  # imageio without its ffmpeg plugin (the GPU image's)
            video = None
    if video is None:  # in memory: the GPU machine may have no video codec
        from peers import frames

        from videolens.sources.video import Video

        video = Video.from_frames(frames(8), fps=4.0)
    sample = vl.VideoQA(video=video, question="Which direction does the purple sphere move in the video?",
                        candidates=["Up and to the right.", "Up and to the left.", "Down and to the left.",
                                    "Down and to the right."], answer="Up and to the right.")
    inputs = model.prepare(sample)
    with torch.no_grad():
        _, cache = model.run_with_cache(inputs, names_filter="hook_embed")
    return model, lm, inputs, cache["hook_embed"]


def _tl_attention(model, inputs):
    """The hooked forward with TransformerLens' own attention (the SDPA fast path switched off)."""
    from videolens.hooked.attention import fast_attention

    with fast_attention(model, False):
        return model(inputs)


def timed(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--family", default="pllava", choices=["pllava", "internvl"])
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        model, lm, inputs, embeds = build(Path(tmp), args.layers, args.width, args.family)
        S = inputs.seq_len
        runners = {
            "hooked (videolens)": lambda: model(inputs),
            "hooked, TL attention": lambda: _tl_attention(model, inputs),
            "transformers eager": lambda: lm(inputs_embeds=embeds),
            "transformers sdpa": lambda: lm(inputs_embeds=embeds),
        }
        impl = {"transformers eager": "eager", "transformers sdpa": "sdpa"}
        ref = None
        times = {k: [] for k in runners}
        for name, fn in runners.items():  # warm-up and agreement check
            if name in impl:
                lm.config._attn_implementation = impl[name]
                lm.set_attn_implementation(impl[name])
            out = fn()
            logits = out if torch.is_tensor(out) else out.logits
            ref = logits if ref is None else ref
            diff = (logits - ref).abs().max().item()
            print(f"{name:22s} max |logit diff| vs hooked: {diff:.2e}")
        for _ in range(args.reps):  # interleaved repetitions
            for name, fn in runners.items():
                if name in impl:
                    lm.set_attn_implementation(impl[name])
                times[name] += timed(fn, 1)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.family}: S={S} positions (video {inputs.layout.video_grid}), {args.layers} layers, width {args.width}, "
              f"{torch.get_num_threads()} threads, {args.reps} reps")
        for k, v in med.items():
            print(f"{k:22s} {v * 1000:9.1f} ms")
        print(f"fast attention path (no attention hook) / transformers sdpa: "
              f"{med['hooked (videolens)'] / med['transformers sdpa']:.2f}x (goal <= 1.3); TransformerLens' own "
              f"attention / transformers sdpa: {med['hooked, TL attention'] / med['transformers sdpa']:.2f}x")
        print(f"hooked / transformers eager: {med['hooked (videolens)'] / med['transformers eager']:.2f}x")
        print(f"hooked / transformers sdpa: {med['hooked (videolens)'] / med['transformers sdpa']:.2f}x")


if __name__ == "__main__":
    main()
