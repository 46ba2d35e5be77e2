"""Argument helpers shared by CLI commands."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def add_model_arguments(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--model", required=required, default=None,
                   help="checkpoint folder (default: the bundled tiny model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="weights dtype")
    p.add_argument("--num-frames", type=int, default=8, help="frames sampled per video (default 8)")


def load_model(args):
    """The HookedVideoLLM named by --model (or the bundled default)."""
    from videolens.model import HookedVideoLLM

    path = args.model or str(default_model_path())
    return HookedVideoLLM.from_pretrained(path, device=args.device, dtype=DTYPES[args.dtype])


def default_model_path() -> Path:
    """The bundled tiny model shipped inside the package."""
    p = Path(__file__).resolve().parents[1] / "assets" / "tiny-videollm"
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"the bundled model is missing at {p}; pass --model DIR")
    return p
