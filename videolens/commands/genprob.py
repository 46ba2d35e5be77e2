"""``videolens genprob``: each option's probability at the last position, layer by layer (Finding 3).

Over a TVBench-format file or one video (same sample arguments as ``videolens lens``). Writes
``OUT/genprob.jsonl`` (resumable) and ``OUT/answer_probability.png`` (true vs false options, mean and
95% interval over samples).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import numpy as np

from .common import (add_model_arguments, add_sample_arguments, bounded_float, load_model,
                     load_samples, run_config, sharded_samples, require_options)

NAME = "genprob"
HELP = "answer-letter probability at the last position for every layer (logit lens), with a figure"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_sample_arguments(p)
    p.add_argument("--mode", default="final_norm", choices=["final_norm", "raw_embed"],
                   help="final_norm: ln_final then W_U (TransformerLens); raw_embed: residual x W_E^T, no norm "
                        "(the paper's released code)")
    p.add_argument("--only-correct", action="store_true",
                   help="plot only samples the model answers correctly (all are recorded)")
    p.add_argument("--exit-tolerance", type=bounded_float(0, 100), default=1.0, metavar="POINTS",
                   help="structural early exit: the earliest layer whose accuracy is within this many points of "
                        "the final layer's (default 1); table in early_exit.csv, figure early_exit.png")


def run(args) -> int:
    from videolens.lens.early_exit import early_exit, table
    from videolens.lens.genprob import curves, genprob_records
    from videolens.plots.lens import plot_answer_probability, plot_early_exit
    from videolens.stats import PROBABILITY, mean_ci

    samples = load_samples(args, answer_required=True)
    require_options(samples, NAME)
    model = load_model(args)
    out = Path(args.out)
    config = run_config(args, model, NAME, mode=args.mode)
    done = sharded_samples(args, model, out, "genprob.jsonl", config, samples,
                           lambda s, inp: genprob_records(model, inp, args.mode), "genprob")
    if done is None:  # a torchrun rank other than 0: its share is written; rank 0 merges and draws
        return 0
    records, counts = done
    answers = [r for r in records if r.get("kind") == "answer"]
    if answers:
        print(f"accuracy (final layer argmax): {np.mean([a['correct'] for a in answers]):.3f} over {len(answers)}")
    layers, labels, p_true, p_false, ids = curves(records, args.only_correct)
    if ids:
        mt, lo, hi = mean_ci(p_true, bounds=PROBABILITY)
        mf = mean_ci(p_false)[0]
        print(f"{'layer':>12} {'p_true':>8} {'95% CI':>19} {'p_false':>8}")
        for i, lab in enumerate(labels):
            print(f"{lab:>12} {mt[i]:8.4f} [{lo[i]:8.4f},{hi[i]:8.4f}] {mf[i]:8.4f}")
        if not args.no_figures:
            plot_answer_probability(p_true, p_false, layers, out / "answer_probability.png", labels=labels)
            print(f"figure: {out / 'answer_probability.png'}")
    elif args.only_correct:
        print("no correctly answered sample: no figure")
    exits = early_exit(records, args.exit_tolerance)
    if exits:  # structural early exit: the answer read at layer k
        print(f"early exit (earliest lens layer within {args.exit_tolerance:g} point(s) of the final accuracy):")
        print(table(exits, out / "early_exit.csv"), end="")
        if not args.no_figures:
            plot_early_exit(exits, out / "early_exit.png")
    return 1 if samples and counts["errors"] == len(samples) else 0
