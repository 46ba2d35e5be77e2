"""``videolens pathways``: accuracy with only a spec's effective pathways kept, vs full causal
attention and vs the same number of edges blocked at random (the paper's Finding 4).

Writes into ``--out``: ``records.jsonl`` (one line per sample x condition, resumable: rerun the
same command to continue), ``summary.csv`` / ``summary.md`` (video tokens, edges kept, accuracy,
delta vs full causal; overall and per task; also printed) and ``pathways.png``.

Example::

    videolens pathways --model ckpt --spec <shipped spec name or spec file> \\
        --data tvbench/action_sequence.json tvbench/moving_direction.json --video-root tvbench/videos \\
        --random-control --limit 50 --out runs/pathways-7b
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import (add_model_arguments, add_sample_arguments, bounded_float, load_model,
                     load_samples, positive_int, run_config, sharded_run, require_options)

NAME = "pathways"
HELP = "accuracy with only a pathway spec's attention edges kept, vs full causal and vs random blocking"


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--spec", default=None,
                   help="a shipped spec name (the paper's models' specs, named as the known checkpoints in videolens "
                        "models; tiny-videollm-discovered) or a JSON/YAML spec file")
    p.add_argument("--discover", default=None, metavar="FLOW_DIR",
                   help="derive the spec from a flow run's records (targets cross-frame and vql-to-ql; a small "
                        "--window such as 1 localises the effects) and evaluate it: OUT/discovered_spec.json")
    p.add_argument("--frontier", default=None, metavar="FLOW_DIR",
                   help="the edges-kept vs accuracy frontier on --data: validated discoveries from FLOW_DIR at each "
                        "--frontier-tolerances, the --frontier-specs, and random blocking of each one's edge count "
                        "(OUT/frontier.csv, OUT/frontier.png, OUT/frontier_specs/)")
    f = p.add_argument_group("frontier (--frontier)")
    f.add_argument("--frontier-tolerances", type=bounded_float(0, 100), nargs="+", default=[1.0, 2.0, 5.0, 10.0, 25.0],
                   metavar="POINTS", help="tolerances of the validated discoveries (default 1 2 5 10 25)")
    f.add_argument("--frontier-specs", nargs="*", default=["llava-next-7b-video-ft"], metavar="NAME",
                   help="shipped specs (or spec files) on the frontier, mapped to the model's depth (default: the "
                        "paper's llava-next-7b-video-ft)")
    f.add_argument("--frontier-seeds", type=positive_int, default=3, metavar="N",
                   help="random-control seeds per spec (default 3)")
    d = p.add_argument_group("discovery (--discover, and --frontier's discoveries)")
    d.add_argument("--discover-method", default="validated", choices=["validated", "threshold"],
                   help="validated (default): grow the kept layers from the sweep's effects until the accuracy on "
                        "validation samples is within --tolerance of the full model's, then prune back; the spec "
                        "records its evidence (videolens.pathways.validate). threshold: keep each edge type where its "
                        "mean effect passes --discover-threshold (videolens.pathways.discover; not validated)")
    d.add_argument("--tolerance", type=bounded_float(0, 100), default=2.0, metavar="POINTS",
                   help="validated: accuracy points the spec may lose against the full model (default 2)")
    d.add_argument("--validate-data", nargs="+", default=None, metavar="FILE",
                   help="validated: annotation files of validation samples (default: the flow's own samples, split "
                        "half for discovery, half for validation)")
    d.add_argument("--validate-video-root", default=None, metavar="DIR",
                   help="validated: folder the --validate-data videos are relative to (default: --video-root)")
    d.add_argument("--discover-threshold", type=bounded_float(0, 100), default=5.0, metavar="PCT",
                   help="threshold: keep an edge type where blocking it lowers p(answer) by at least this many "
                        "percent on average (default 5)")
    d.add_argument("--discover-by", default="all", choices=["all", "task", "sample"],
                   help="threshold: one spec for all samples (evaluated), or also one per task / per sample "
                        "(sample-adaptive), written to OUT/discovered_specs.json")
    add_sample_arguments(p)
    p.add_argument("--random-control", action="store_true",
                   help="also block the same number of edges per layer at random")
    p.add_argument("--random-match", default="official", choices=["official", "layer", "total"],
                   help="random edges per layer: official (default, the paper's code: int(ratio x S(S+1)/2) in "
                        "every layer, diagonal eligible), layer (as many as the spec blocks in that layer, never "
                        "the diagonal), total (the spec's total spread evenly over layers)")
    p.add_argument("--random-ratio", type=bounded_float(0, 1, low_open=True), default=None,
                   help="official random control's block ratio (default: the spec's random_block_ratio, "
                        "e.g. 0.58 for the 7B, else the spec's own blocked fraction)")
    p.add_argument("--self-edges", default="block", choices=["block", "keep"],
                   help="block (default, the paper's code: blocked edge types include the diagonal) or keep "
                        "(never block a token's edge to itself)")
    p.add_argument("--seed", type=int, default=0, help="random-control seed (default 0)")
    p.add_argument("--prune", action="store_true",
                   help="pathway-pruned inference: evaluate the spec's prunable variant (<name>+prunable: the video's "
                        "edges to all later text also blocked after the spec's last video-reading layer; a difference "
                        "from the paper) and drop the video rows from that layer on (videolens.pathways.pruned)")


_DEFAULTS = {"discover_by": "all", "validate_data": None, "validate_video_root": None, "tolerance": 2.0,
             "discover_threshold": 5.0, "random_control": False, "random_match": "official", "random_ratio": None,
             "self_edges": "block", "seed": 0, "prune": False}


def _refuse_other_modes(args, validated: bool, threshold: bool) -> None:
    """One line for an option the chosen mode would ignore (never silently).

    Raises:
        ValueError: e.g. ``--tolerance`` with ``--spec``, ``--prune`` with ``--frontier``.
    """
    owners = {"discover_by": threshold, "discover_threshold": threshold, "validate_data": validated,
              "validate_video_root": validated, "tolerance": validated}
    if args.frontier is not None:  # the frontier draws its own random controls; no spec evaluation options
        owners.update({k: False for k in ("random_control", "random_match", "random_ratio", "self_edges", "seed",
                                           "prune")})
    for name, allowed in owners.items():
        if not allowed and getattr(args, name) != _DEFAULTS[name]:
            raise ValueError(f"--{name.replace('_', '-')}: not used by this run (--spec, --discover with "
                             f"--discover-method validated or threshold, and --frontier each take their own options)")


def _validation(args):
    """The --validate-data samples, or None (the flow's own samples are split)."""
    if not args.validate_data:
        return None
    from videolens.sources.formats import load_annotation_files

    return load_annotation_files(args.validate_data, args.validate_video_root or args.video_root, format=args.format)


def _frontier(args) -> int:
    """``--frontier``: the rows, frontier.csv and frontier.png (``videolens.pathways.frontier``)."""
    from videolens.pathways import load_spec
    from videolens.pathways.frontier import frontier_from_flow
    from videolens.plots.pathways import plot_frontier

    from videolens.running.distributed import world

    if world()[1] > 1:
        raise ValueError("--frontier runs in one process (not sharded by torchrun yet)")
    for name in args.frontier_specs:
        load_spec(name)  # a bad name fails before the model loads
    validation = _validation(args)
    samples = load_samples(args)
    require_options(samples, NAME)
    model = load_model(args)
    try:
        rows = frontier_from_flow(model, args.frontier, samples, args.out, args.frontier_tolerances,
                                  range(args.frontier_seeds), args.frontier_specs, validation, args.num_frames,
                                  progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr))
    except (FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"--frontier {args.frontier}: {exc}") from None
    out = Path(args.out)
    if not args.no_figures:
        plot_frontier(rows, out / "frontier.png", title=f"edges kept vs accuracy ({model.cfg.n_layers} layers, "
                                                        f"{rows[0]['n']} samples)")
    print(f"{'spec':<40} {'kind':<10} {'kept':>7} {'accuracy':>9} {'95% CI':>15}")
    for r in rows:
        print(f"{r['spec']:<40} {r['kind']:<10} {100 * r['kept_fraction']:6.1f}% {r['accuracy']:8.1f}% "
              f"[{r['ci_low']:5.1f}, {r['ci_high']:5.1f}]")
    print(f"frontier.csv{'' if args.no_figures else ' and frontier.png'} in {out}", file=sys.stderr)
    return 0


def run(args) -> int:
    from videolens.pathways import evaluate, load_spec, summarize, summary_markdown, write_summary
    from videolens.plots.pathways import plot_summary

    if sum(x is not None for x in (args.spec, args.discover, args.frontier)) != 1:
        raise ValueError("give exactly one of --spec NAME, --discover FLOW_DIR and --frontier FLOW_DIR")
    for flag, folder in (("--discover", args.discover), ("--frontier", args.frontier)):
        if folder is not None and not (Path(folder) / "records.jsonl").is_file():  # before the model loads
            raise FileNotFoundError(f"{flag} {folder}: no flow records (records.jsonl) there")
    validated = args.frontier is not None or (args.discover is not None and args.discover_method == "validated")
    threshold = args.discover is not None and args.discover_method == "threshold"
    _refuse_other_modes(args, validated, threshold)
    if args.frontier is not None:
        return _frontier(args)
    if args.spec:
        spec = load_spec(args.spec)  # a bad spec fails before the model loads
    elif not validated:
        from videolens.pathways.discover import discover_from_flow

        try:
            spec = discover_from_flow(args.discover, args.out, args.discover_threshold, args.discover_by)
        except (FileNotFoundError, ValueError) as exc:
            raise type(exc)(f"--discover {args.discover}: {exc}") from None
    validation = _validation(args) if validated else None
    samples = load_samples(args)
    require_options(samples, NAME)
    model = load_model(args)
    if validated:
        from videolens.pathways.validate import validated_from_flow
        from videolens.running import distributed as dist

        rank, size = dist.world()
        if rank == 0:  # under torchrun, rank 0 discovers and writes the spec; the others read it
            try:
                _, evidence = validated_from_flow(model, args.discover, args.out, args.tolerance, validation,
                                                  args.num_frames, progress=not args.no_progress,
                                                  log=lambda m: print(m, file=sys.stderr))
            except (FileNotFoundError, ValueError) as exc:
                raise type(exc)(f"--discover {args.discover}: {exc}") from None
            print(evidence.summary(), file=sys.stderr)
        if size > 1:
            dist.barrier()
        spec = load_spec(Path(args.out) / "discovered_spec.json")
    if args.prune:
        from videolens.pathways.pruned import prunable

        spec = prunable(spec)
    plan = spec.plan(model.cfg.n_layers, self_edges=args.self_edges)
    mapped = "" if plan.n_layers == spec.n_layers else f" (mapped from {spec.n_layers} layers by relative depth)"
    print(f"spec {spec.name}{mapped}:", file=sys.stderr)
    for line in plan.describe():
        print(f"  {line}", file=sys.stderr)

    out = Path(args.out)
    config = run_config(args, model, NAME, spec=spec.name, spec_digest=spec.digest, n_layers=model.cfg.n_layers,
                        random_control=bool(args.random_control), random_match=args.random_match,
                        random_ratio=args.random_ratio, self_edges=args.self_edges, seed=args.seed,
                        **({"pruned": True} if args.prune else {}))
    done = sharded_run(out, "records.jsonl", config, samples, not args.no_retry_skipped,
                       lambda mine, writer: evaluate(model, mine, spec, random_control=args.random_control,
                                                     seed=args.seed, match=args.random_match,
                                                     num_frames=args.num_frames, writer=writer,
                                                     progress=not args.no_progress, random_ratio=args.random_ratio,
                                                     self_edges=args.self_edges, pruned=args.prune))
    if done is None:  # a torchrun rank other than 0: its share is written; rank 0 merges and draws
        return 0
    records = done[0]
    wanted = {s.sample_id for s in samples}
    records = [r for r in records if r["sample_id"] in wanted]
    rows = summarize(records)
    title = f"{spec.name} on {model.cfg.n_layers} layers"
    write_summary(rows, out, title)
    if not args.no_figures:
        plot_summary(records, rows, out / "pathways.png", title)
    print(summary_markdown(rows, title))
    print(f"records, summary.csv, summary.md and pathways.png in {out}", file=sys.stderr)
    return 0
