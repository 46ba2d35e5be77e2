"""``videolens flow``: attention-knockout sweeps over a TVBench/MVBench-format dataset (Findings 1-3).

For every sample (answered correctly by the clean model, unless ``--samples all``) and every edge
pair of each target, blocks the pair in a window of ``--window`` layers centred on each layer and
records the answer probability change. Writes into ``--out``:

- ``records.jsonl``: one line per sample x pair x centre layer, written as each sample finishes;
  rerun the same command to continue (finished samples are skipped, a killed run loses none);
  skipped samples (missing video, wrong baseline answer) are recorded with their status;
- ``flow_<target>.png``: mean relative change per centre layer, one line per pair, 95% band;
- ``summary.csv``: the numbers behind the figures.

Example::

    videolens flow --model ckpt --data tvbench/action_sequence.json --video-root tvbench/videos \\
        --target cross-frame --window 9 --limit 100 --out runs/flow-cross-frame
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from .common import add_model_arguments, add_sample_arguments, load_model, load_samples

NAME = "flow"
HELP = "attention-knockout sweeps over a dataset: where information flows, per layer (paper Findings 1-3)"


def add_arguments(p) -> None:
    add_model_arguments(p)
    add_sample_arguments(p)
    p.add_argument("--target", required=True, nargs="+", metavar="NAME",
                   help="knockout target(s): cross-frame, vql-to-ql, question-and-options-to-last, "
                        "vq-to-true-opt, any registered target, or 'all'")
    p.add_argument("--window", type=int, default=9, help="layers per knockout window, centred and clipped (default 9)")
    p.add_argument("--samples", default="correct", choices=["correct", "all"],
                   help="analyse samples the clean model answers correctly (paper, default) or all")
    p.add_argument("--heads", type=int, nargs="+", default=None, metavar="H",
                   help="knock out these heads only (default: every head)")
    p.add_argument("--method", default="fast", choices=["fast", "full"],
                   help="fast: incremental recomputation (default); full: a whole forward per condition")


def run(args) -> int:
    from tqdm.auto import tqdm

    from videolens.knockout import TARGETS, check_window, get_target
    from videolens.knockout.dataset import sweep_sample
    from videolens.knockout.plots import plot_target, write_summary_csv
    from videolens.runs import RecordWriter, read_records, read_statuses

    names = sorted(TARGETS) if "all" in args.target else list(dict.fromkeys(args.target))
    targets = [get_target(n) for n in names]  # unknown name: error listing the known ones, before loading
    if args.window < 1:
        raise ValueError(f"--window must be >= 1, got {args.window}")
    samples = load_samples(args)
    model = load_model(args)
    check_window(args.window, model.cfg.n_layers)  # window larger than the model: error
    if args.heads is not None and not all(0 <= h < model.cfg.n_heads for h in args.heads):
        raise ValueError(f"--heads {args.heads} out of range for {model.cfg.n_heads} heads")

    out = Path(args.out)
    path = out / "records.jsonl"
    config = {
        "command": NAME,
        "model": str(args.model or "bundled"),
        "dtype": args.dtype,
        "num_frames": args.num_frames,
        "targets": names,
        "window": args.window,
        "samples": args.samples,
        "heads": args.heads,
        "n_layers": model.cfg.n_layers,
    }
    counts: Counter = Counter()
    with RecordWriter(path, config) as writer:
        bar = tqdm(samples, desc=f"flow {','.join(names)}", unit="sample", disable=args.no_progress)
        for sample in bar:
            sid = sample.sample_id
            if writer.is_done(sid):
                counts["already done"] += 1
                continue
            res = sweep_sample(model, sample, targets, window=args.window, method=args.method,
                               samples=args.samples, num_frames=args.num_frames, heads=args.heads)
            if res.status not in ("ok", "baseline_incorrect"):
                tqdm.write(f"warning: skipping {sid}: {res.message}", file=sys.stderr)
            writer.write_sample(sid, res.records, status=res.status)
            counts[res.status] += 1
            skipped = sum(v for k, v in counts.items() if k not in ("ok", "already done"))
            bar.set_postfix(ok=counts["ok"], skipped=skipped)

    wanted = {s.sample_id for s in samples}
    statuses = {k: v for k, v in read_statuses(path).items() if k in wanted}
    records = [r for r in read_records(path) if r["sample_id"] in wanted]
    print(f"samples: {len(wanted)}; " + ", ".join(f"{k}: {v}" for k, v in sorted(Counter(statuses.values()).items())),
          file=sys.stderr)
    if not records:
        print("no records to plot (no sample passed the filters)", file=sys.stderr)
        return 0
    write_summary_csv(records, out / "summary.csv")
    for t in ([] if args.no_figures else names):
        if any(r["target"] == t for r in records):
            plot_target(records, t, path=out / f"flow_{t}.png",
                        title=f"{t}: {model.cfg.n_layers} layers, window {args.window}, "
                              f"n = {len({r['sample_id'] for r in records if r['target'] == t})}")
    print(f"records.jsonl, summary.csv and flow_<target>.png in {out}", file=sys.stderr)
    return 0
