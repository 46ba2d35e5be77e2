"""The vision front end: videolens' ``model.vision(frames)`` next to transformers' processor +
``get_video_features``, side by side in one run (issue 21).

One LlavaNextVideo checkpoint (transformers' own ``save_pretrained`` layout) with a CLIP tower of
``--vision-layers`` layers, ``--d-vision`` wide, 336 px / patch 14 (the paper's CLIP-L/336 is 24
layers, 1024 wide; the defaults are smaller so it runs on a CPU), a 2x2 spatial pool and a small
text model (unused here). ``--frames`` uint8 frames of 720x1280 (in memory: the GPU machine may
have no video codec) go through

1. transformers: ``CLIPImageProcessorPil`` (the PIL processor, frame by frame) -> pixel values on
   the device -> ``LlavaNextVideoForConditionalGeneration.get_video_features``;
2. videolens, the default (``preprocessing="pil"``): the same PIL processor, then tower, pool and
   projector in one batch (``model.vision(frames)``);
3. videolens ``preprocessing="torch"``: resize, crop and normalise as batched torch ops on the
   device (``videolens.frontend.tensor_preprocess``), then the same.

Times are medians of ``--reps`` interleaved repetitions, each ending in a device synchronisation.
It checks (2) against (1) (the same numbers, <= 1e-4) and prints how far (3) is from them; the last
line is the ratio (3) / (1) (goal <= 1.5).

    python benchmarks/vision.py [--vision-layers 4] [--d-vision 256] [--frames 16] [--reps 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def video_frames(n: int, h: int = 720, w: int = 1280) -> np.ndarray:
    """``n`` uint8 frames with edges and gradients (so resampling differences show)."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = (xx * 255 // w + 8 * i) % 256
        out[i, ..., 1] = (yy * 255 // h) % 256
        out[i, ..., 2] = ((xx // 40 + yy // 40 + i) % 2) * 200
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vision-layers", type=int, default=4, help="CLIP layers (paper's CLIP-L/336: 24)")
    ap.add_argument("--d-vision", type=int, default=256, help="CLIP width (paper's: 1024)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    dtype = getattr(torch, args.dtype)

    import transformers
    from forward import sync as wait
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    import videolens as vl
    from videolens.testing import make_tiny_llava_next_video

    def sync():
        wait(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        ck = make_tiny_llava_next_video(Path(tmp) / "lnv", image_size=336, patch_size=14, d_vision=args.d_vision,
                                        vision_layers=args.vision_layers, n_layers=1, d_model=64)
        hf = transformers.LlavaNextVideoForConditionalGeneration.from_pretrained(ck, dtype=dtype).to(args.device).eval()
        proc = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        pil = vl.HookedVideoLLM.from_pretrained(ck, device=args.device, dtype=dtype)
        fast = vl.HookedVideoLLM.from_pretrained(ck, device=args.device, dtype=dtype, preprocessing="torch")
        frames = video_frames(args.frames)

        def transformers_features():
            pv = proc(list(frames), return_tensors="pt")["pixel_values"].to(args.device, dtype)
            out = hf.get_video_features(pixel_values_videos=pv[None])
            feats = getattr(out, "pooler_output", out)
            feats = feats[0] if isinstance(feats, (list, tuple)) else feats
            sync()
            return feats.reshape(-1, feats.shape[-1])

        def videolens(model):
            def run():
                out = model.vision(frames)
                sync()
                return out.reshape(-1, out.shape[-1])
            return run

        methods = [("(1) transformers processor + get_video_features", transformers_features),
                   ("(2) videolens, PIL preprocessing (default)", videolens(pil)),
                   ("(3) videolens, preprocessing='torch'", videolens(fast))]
        outs = [fn() for _, fn in methods]  # warm-up, and the outputs compared
        times = [[] for _ in methods]
        for _ in range(args.reps):
            for i, (_, fn) in enumerate(methods):
                t0 = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - t0)
        med = [statistics.median(t) for t in times]
        print(f"{args.frames} frames of 720x1280 -> CLIP {args.vision_layers} layers x {args.d_vision} wide, 336 px / "
              f"patch 14 -> 2x2 pool; {args.dtype}, device {args.device}, {torch.get_num_threads()} threads, "
              f"medians of {args.reps}")
        for (name, _), m in zip(methods, med):
            print(f"{name:52s} {m * 1000:9.1f} ms  ({m / med[0]:.2f}x (1))")
        print(f"features {tuple(outs[0].shape)}: |(2) - (1)| max {float((outs[1].float() - outs[0].float()).abs().max()):.2e}; "
              f"|(3) - (1)| max {float((outs[2].float() - outs[0].float()).abs().max()):.2e} "
              f"(torch resizing, within 2 uint8 levels of PIL)")
        print(f"(2)/(1): {med[1] / med[0]:.2f}x")
        print(f"(3)/(1): {med[2] / med[0]:.2f}x")


if __name__ == "__main__":
    main()
