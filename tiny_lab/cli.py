"""``python -m tiny_lab``: one phase, the whole recipe, or an evaluation."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .config import _parser, config_from_args
from .evaluate import evaluate_checkpoint
from .recipe import RECIPE
from .train import train


def run_recipe(out: Path, threads: int = 1) -> Path:
    """Run every phase of ``RECIPE`` under ``out/<phase>``; returns the last phase's folder
    (its ``export/`` is the checkpoint)."""
    prev = ""
    folder = out
    for name, args in RECIPE:
        folder = out / name
        argv = [a.replace("{prev}", prev) for a in args] + ["--out", str(folder), "--threads", str(threads)]
        main(argv)
        prev = str(folder / "state.pt")
    return folder


def main(argv=None) -> int:
    """Command line: ``python -m tiny_lab --out DIR --seed 0 [--minutes 60] [--max-steps N]``."""
    p = _parser()
    a = p.parse_args(argv)
    if a.recipe:
        run_recipe(a.out, a.threads)
        return 0
    if a.evaluate is not None:
        torch.set_num_threads(a.threads)
        res = evaluate_checkpoint(a.evaluate, a.n_eval)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "eval.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0
    cfg = config_from_args(p, a)
    if a.bench:
        cfg = replace(cfg, max_steps=a.bench, eval_every=10**9, minutes=1e9, eval_per_task=2)
        t = time.time()
        train(cfg, a.out)
        print(f"{(time.time() - t) / a.bench:.3f} s/step (incl. final eval)")
        return 0
    (a.out).mkdir(parents=True, exist_ok=True)
    (a.out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    train(cfg, a.out, resume=a.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
