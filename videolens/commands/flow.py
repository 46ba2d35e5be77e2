"""``videolens flow``: attention-knockout sweeps over a TVBench/MVBench-format dataset (Findings 1-3).

For every sample (answered correctly by the clean model, unless ``--samples all``) and every edge
pair of each target, blocks the pair in a window of ``--window`` layers centred on each layer and
records the answer probability change. Writes into ``--out``:

- ``records.jsonl``: one line per sample x pair x centre layer, written as each sample finishes;
  rerun the same command to continue (finished samples are skipped, a killed run loses none);
  skipped samples (missing video, wrong baseline answer) are recorded with their status;
- ``flow_<target>.png``: mean relative change per centre layer, one line per pair, 95% band;
- ``summary.csv``: the numbers behind the figures;
- with ``--compare-model DIR`` (e.g. the ImageLLM base of Finding 1): the same files for that
  model in ``compare/``, and ``flow_<target>_compare.png`` drawing both models' curves.

The metric is the official one (``videolens.knockout.sweep``): the relative change of the
probability of the baseline's full-vocabulary argmax token (and of the true letter).

Example::

    videolens flow --model ckpt --data tvbench/action_sequence.json --video-root tvbench/videos \\
        --target cross-frame --window 9 --limit 100 --out runs/flow-cross-frame
    videolens flow --model <video-llm> --compare-model <its image-llm base> \
        --data ... --video-root ... --target cross-frame --out runs/finding1
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

from videolens.running.distributed import world as dist_world

from videolens.argtypes import positive_int_or

from .common import (positive_int, non_negative_int, add_model_arguments, add_sample_arguments, load_model,
                     load_samples, run_config, run_frames, require_options, sharded_samples)

NAME = "flow"
DEFAULT_WINDOW = 9  # the paper's knockout window
HELP = "attention-knockout sweeps over a dataset: where information flows, per layer (paper Findings 1-3)"


def add_arguments(p) -> None:
    from videolens.knockout.sweep import SAMPLE_MODES

    add_model_arguments(p)
    add_sample_arguments(p)
    p.add_argument("--target", required=False, nargs="+", metavar="NAME", default=None,
                   help="knockout target(s): cross-frame, vql-to-ql, question-and-options-to-last, "
                        "vq-to-true-opt, any registered target, or 'all'")
    p.add_argument("--window", type=positive_int, default=None,
                   help="layers per knockout window, centred and clipped (default 9, the paper's; the model's depth "
                        "when it has fewer layers)")
    p.add_argument("--method", default="fast", choices=["fast", "full"],
                   help="fast: incremental recomputation (default); full: a whole forward per condition")
    ko = p.add_argument_group("knockout sweeps (the default mode; settings: videolens.knockout.KnockoutSettings)")
    ko.add_argument("--samples", default="correct", choices=list(SAMPLE_MODES),
                    help="correct (default, the paper: the baseline's full-vocabulary argmax is the true letter), "
                         "wrong / incorrect (the failure cases), all (then also flow_<target>_correct_vs_incorrect.png, "
                         "both groups side by side), or correct_option (argmax among the option letters is the true one)")
    ko.add_argument("--self-edges", default="block", choices=["block", "keep"],
                    help="block (default, the paper's code: last->last blocks the last token's edge to itself) or "
                         "keep (never block a token's edge to itself)")
    ko.add_argument("--heads", type=non_negative_int, nargs="+", default=None, metavar="H",
                    help="knock out these heads only (default: every head)")
    ko.add_argument("--batch-conditions", type=positive_int_or("auto"), default="auto", metavar="N|auto",
                    help="with --method fast: run up to N knockout conditions (pairs x centre layers) as one batch; "
                         "the same numbers up to float rounding, much faster on a GPU. Default auto: as many as the "
                         "free memory holds (at most 4 on a CPU, where larger batches gain nothing); on a GPU an "
                         "out-of-memory halves the batch and retries. 1: one by one")
    ko.add_argument("--compare-model", default=None, metavar="DIR",
                    help="a second checkpoint (e.g. the ImageLLM base) run on the same samples into OUT/compare; "
                         "each target's figure then draws both models (paper Finding 1)")
    oe = p.add_argument_group("open-ended knockout (--open-ended; paper Sec. 4.3)")
    oe.add_argument("--open-ended", action="store_true",
                    help="the model writes its answer after 'Answer:' and the probability of its first --track answer "
                         "tokens is traced (pairs video->question, video->last, question->last, response->last); "
                         "--target is then 'open-ended'")
    oe.add_argument("--track", type=positive_int, default=1, metavar="N", help="answer tokens traced (default 1)")
    oe.add_argument("--max-new-tokens", type=positive_int, default=24, metavar="N",
                    help="answer length generated (default 24)")
    oe.add_argument("--answer-prefix", default="Answer:", metavar="TEXT",
                    help="what the prompt ends with (default 'Answer:', the bundled model's; '' for VCGBench's "
                         "official prompt)")
    at = p.add_argument_group("gradient edge attribution (--attribution)")
    at.add_argument("--attribution", action="store_true",
                    help="first-order estimates of every pair of --target at every layer from one forward and one "
                         "backward pass a sample instead of exact knockouts (videolens.knockout.attribution; "
                         "one-layer windows)")


def _sweep_dataset(model, samples, settings, args, out: Path, model_path: str) -> list:
    """``knockout.run_dataset`` into ``out`` with this command's settings; prints the statuses."""
    from videolens.knockout import run_dataset
    from videolens.running.records import read_statuses

    from videolens.running import distributed as dist

    config = run_config(args, model, NAME, method=args.method)
    if model_path != str(args.model or "bundled"):
        config["model"] = str(Path(model_path).resolve())
    records = run_dataset(model, dist.shard(samples), settings, dist.rank_folder(out), num_frames=args.num_frames,
                          config=config, progress=not args.no_progress, retry_skipped=not args.no_retry_skipped)
    rank, size = dist.world()
    if size > 1:  # torchrun: rank 0 merges every rank's records once all finished
        dist.barrier()
        if rank != 0:
            return None
        records = dist.merge_records(out, "records.jsonl", [s.sample_id for s in samples], config)
    wanted = {s.sample_id for s in samples}
    statuses = [v for k, v in read_statuses(out / "records.jsonl").items() if k in wanted]
    print(f"{model_path}: samples: {len(wanted)}; "
          + ", ".join(f"{k}: {v}" for k, v in sorted(Counter(statuses).items())), file=sys.stderr)
    return records


def _compare_preflight(args) -> Optional[int]:
    """Check ``--compare-model`` at startup as the main model is checked (folder, config.json, family),
    so its problems are not found after the main sweep; returns its text layer count when stated."""
    if args.compare_model is None:
        return None
    from videolens.sources.hub import resolve_checkpoint
    from weights_conversion.registry import preflight

    try:
        return preflight(resolve_checkpoint(args.compare_model))[2]
    except (FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"--compare-model {args.compare_model}: {exc}") from None


def _figures(records, names, out: Path, n_layers: int, window: int, prefix: str = "", split: bool = False) -> None:
    from videolens.plots.knockout import plot_correct_incorrect, plot_target

    for t in names:
        if any(r["target"] == t for r in records):
            n = len({r["sample_id"] for r in records if r["target"] == t})
            plot_target(records, t, path=out / f"flow_{t}.png",
                        title=f"{prefix}{t}: {n_layers} layers, window {window}, n = {n}")
            if split:  # failure diagnosis: correct and incorrect samples side by side
                plot_correct_incorrect(records, t, path=out / f"flow_{t}_correct_vs_incorrect.png",
                                       title=f"{prefix}{t}: correct vs incorrect samples ({n_layers} layers, window {window})")


def _open_ended(model, samples, args, out: Path, window: int) -> int:
    """``--open-ended``: ``videolens.knockout.open_ended`` on every unfinished sample, resumable records,
    summary and the figure ``flow_open-ended.png``."""
    from videolens.knockout.open_ended import OpenEndedSettings, answer_prefix, open_ended_sweep
    from videolens.knockout.summary import write_summary_csv

    settings = OpenEndedSettings(window=window, track=args.track, max_new_tokens=args.max_new_tokens,
                                 method=args.method, answer_prefix=args.answer_prefix).check(model)
    config = run_config(args, model, NAME, **settings.header(), method=settings.method)
    with answer_prefix(model, settings.answer_prefix):  # prepare() ends every prompt with it
        done = sharded_samples(args, model, out, "records.jsonl", config, samples,
                               lambda sample, inputs: open_ended_sweep(model, inputs, settings=settings), "open-ended")
    if done is None:  # a torchrun rank other than 0: its share is written; rank 0 merges and draws
        return 0
    records = [r for r in done[0] if r.get("target") == "open-ended"]
    if records:
        write_summary_csv(records, out / "summary.csv")
        if not args.no_figures:
            _figures(records, ["open-ended"], out, model.cfg.n_layers, window)
    print(f"open-ended records ({len({r['sample_id'] for r in records})} sample(s)) in {out}", file=sys.stderr)
    return 0


def _attribution(model, samples, targets, args, out: Path) -> int:
    """``--attribution``: first-order estimates for every sample into records.jsonl (as knockout
    records of one-layer windows, ``rel_change`` the estimate), summary.csv and the figures."""
    from videolens.knockout.attribution import edge_attribution
    from videolens.knockout.summary import write_summary_csv
    # the linearised metric is part of the run: an older folder (log p estimates) is not resumed into
    config = run_config(args, model, NAME, attribution=True, attribution_metric="log-odds",
                        targets=[t.name for t in targets])

    def records(sample, inputs):
        return [dict(r, rel_change=r["est_rel_change"], layers=[r["layer"]], window=1, base_letter=None,
                     ko_letter=None, true_letter=None) for r in edge_attribution(model, inputs, targets)]

    done = sharded_samples(args, model, out, "records.jsonl", config, samples, records, "attribution")
    if done is None:  # a torchrun rank other than 0: its share is written; rank 0 merges and draws
        return 0
    recs = [r for r in done[0] if r.get("est_delta_logp") is not None]
    if recs:
        write_summary_csv(recs, out / "summary.csv")
        if not args.no_figures:
            _figures(recs, [t.name for t in targets], out, model.cfg.n_layers, 1, prefix="attribution: ")
    print(f"attribution records and figures in {out}", file=sys.stderr)
    return 0


MODE_OPTIONS = {
    "knockout": ("samples", "self_edges", "heads", "batch_conditions", "compare_model"),
    "open-ended": ("track", "max_new_tokens", "answer_prefix"),
}
"""Options of one mode: given in another mode (a value other than the parser's default), they are
refused (not ignored)."""


@functools.lru_cache(maxsize=1)
def _parser_defaults() -> dict:
    """The defaults ``add_arguments`` gives every option (one source for them)."""
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    return {k: p.get_default(k) for names in MODE_OPTIONS.values() for k in names}


def _check_mode_options(args) -> None:
    """One line for an option that belongs to another mode than the one run.

    Raises:
        ValueError: ``--open-ended`` with ``--attribution``, or e.g. ``--track`` without ``--open-ended``.
    """
    if args.open_ended and args.attribution:
        raise ValueError("--open-ended and --attribution are two modes: give one")
    mode = "open-ended" if args.open_ended else "attribution" if args.attribution else "knockout"
    defaults = _parser_defaults()
    for owner, options in MODE_OPTIONS.items():
        if owner == mode:
            continue
        given = [k for k in options if getattr(args, k) != defaults[k]]
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ValueError(f"{flags}: only with the {owner} mode" + ("" if owner == "knockout" else " (--open-ended)")
                             + f"; this run is the {mode} mode")


def run(args) -> int:
    from videolens.knockout import TARGETS, KnockoutSettings, check_window
    from videolens.layers import resolve_heads
    from videolens.knockout.summary import write_summary_csv
    from videolens.plots.knockout import plot_models

    _check_mode_options(args)
    if args.open_ended:
        args.target = ["open-ended"]
    if not args.target:
        raise ValueError("--target is required (or --open-ended)")
    names = [] if args.open_ended else sorted(TARGETS) if "all" in args.target else list(dict.fromkeys(args.target))
    if args.heads is not None and len(set(args.heads)) != len(args.heads):
        raise ValueError(f"--heads {args.heads}: a head is given twice")
    settings = None
    if names:  # the knockout settings, built and checked here (an unknown target fails before the model loads)
        settings = KnockoutSettings(targets=tuple(names), window=args.window or DEFAULT_WINDOW, heads=args.heads,
                                    samples=args.samples, self_edges=args.self_edges, method=args.method,
                                    batch_conditions=args.batch_conditions)
    compare_layers = _compare_preflight(args)
    samples = load_samples(args)
    if not args.open_ended:
        require_options(samples, NAME)
    model = load_model(args)
    window = args.window
    if window is None:
        window = min(DEFAULT_WINDOW, model.cfg.n_layers)
        if window < DEFAULT_WINDOW:
            print(f"--window not given: {window} (the model has {model.cfg.n_layers} layers; the paper's "
                  f"{DEFAULT_WINDOW} needs at least {DEFAULT_WINDOW})", file=sys.stderr)
    check_window(window, model.cfg.n_layers)  # window larger than the model: error
    if compare_layers is not None and window > compare_layers:
        raise ValueError(f"--compare-model {args.compare_model}: window {window} is larger than its "
                         f"{compare_layers} layers")
    if args.heads is not None:
        try:
            resolve_heads(args.heads, model.cfg.n_heads)
        except ValueError:
            raise ValueError(f"--heads {args.heads} out of range for {model.cfg.n_heads} heads (distinct indices "
                             "from 0)") from None
    if settings is not None:  # passed down whole from here
        settings = settings.replace(window=window).check(model)

    out = Path(args.out)
    if (args.open_ended or args.attribution) and dist_world()[1] > 1:
        raise ValueError("--open-ended and --attribution run in one process (not sharded by torchrun yet)")
    if args.open_ended:
        return _open_ended(model, samples, args, out, window)
    if args.attribution:
        return _attribution(model, samples, list(settings.targets), args, out)
    main_name = str(args.model or "bundled")
    records = _sweep_dataset(model, samples, settings, args, out, main_name)
    if records is None:  # a torchrun rank other than 0: its share is written; rank 0 merges and draws
        return 0
    n_layers = model.cfg.n_layers
    runs = {Path(main_name).name or main_name: records}
    if args.compare_model is not None:
        frames = run_frames(args, model)  # the second model sees the same frames
        del model  # one model in memory at a time
        other = load_model(args, path=args.compare_model, num_frames=frames)
        compare = _sweep_dataset(other, samples, settings.check(other), args, out / "compare", str(args.compare_model))
        if compare is None:
            return 0
        label = Path(args.compare_model).name
        if label in runs:
            label = f"{label} (compare)"
        runs[label] = compare
        if compare:
            write_summary_csv(compare, out / "compare" / "summary.csv")
            if not args.no_figures:
                _figures(compare, names, out / "compare", other.cfg.n_layers, window, f"{label}: ")
    if not records:
        print("no records to plot (no sample passed the filters)", file=sys.stderr)
        return 0
    write_summary_csv(records, out / "summary.csv")
    if not args.no_figures:
        _figures(records, names, out, n_layers, window, split=args.samples == "all")
        if args.compare_model is not None and runs[list(runs)[1]]:
            for t in names:
                plot_models(runs, t, path=out / f"flow_{t}_compare.png",
                            title=f"{t}: " + " vs ".join(runs) + f" (window {window})")
    print(f"records.jsonl, summary.csv and flow_<target>.png in {out}"
          + ("; flow_<target>_compare.png draws both models" if args.compare_model else ""), file=sys.stderr)
    return 0
