"""``python -m tiny_lab``: one phase, the whole recipe, or an evaluation."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .config import parse
from .evaluate import evaluate_checkpoint
from .recipe import RECIPE_FILE, recipe_configs
from .train import train


def run_recipe(out: Path, threads: int = 1, recipe_file: Path = RECIPE_FILE) -> Path:
    """Run every phase of a recipe file under ``out/<phase>``; returns the last phase's folder
    (its ``export/`` is the checkpoint)."""
    folder = Path(out)
    for name, cfg in recipe_configs(recipe_file, out):
        folder = Path(out) / name
        _run_phase(replace(cfg, threads=threads), folder)
    return folder


def _run_phase(cfg, out: Path, resume: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    train(cfg, out, resume=resume)


def main(argv=None) -> int:
    """Command line: ``python -m tiny_lab --out DIR --seed 0 [--minutes 60] [--max-steps N]`` (every
    ``TrainConfig`` field is an option; ``--help`` lists them)."""
    cfg, opts = parse(argv)
    if opts.recipe:
        run_recipe(opts.out, cfg.threads, opts.recipe_file)
        return 0
    if opts.evaluate is not None:
        torch.set_num_threads(cfg.threads)
        res = evaluate_checkpoint(opts.evaluate, opts.n_eval)
        opts.out.mkdir(parents=True, exist_ok=True)
        (opts.out / "eval.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0
    if opts.bench:
        cfg = replace(cfg, max_steps=opts.bench, eval_every=10**9, minutes=1e9, eval_per_task=2)
        t = time.time()
        train(cfg, opts.out)
        print(f"{(time.time() - t) / opts.bench:.3f} s/step (incl. final eval)")
        return 0
    _run_phase(cfg, opts.out, resume=opts.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
