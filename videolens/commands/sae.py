"""``videolens sae train|features``: sparse autoencoders on a VideoLLM's activations, with SAELens.

``train`` runs clips (``--data`` files or a benchmark, or ``--synthetic`` clips of the bundled tasks)
through the model and trains an SAE on one hook point's activations at the chosen positions with
SAELens' trainer (``videolens.saes.training``): ``OUT/run.json`` (the run's identity; another run
into OUT is refused), ``OUT/checkpoints/`` (resumed by the same command), ``OUT/final/`` (the SAE,
``sae_lens.SAE.load_from_disk``), ``OUT/training.json``.

``features`` reads one feature of a trained SAE over clips (``videolens.saes.features``): its
top-activating clips and positions (``OUT/top.csv``), the feature on the frames of the strongest
clip (``OUT/feature<F>.png``), its direct logit effect on the option letters and its ablation at
the video positions (relative change of the answer probability, ``OUT/ablation.csv``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import (add_model_arguments, add_sample_arguments, bounded_float, load_model, load_samples,
                     model_label, positive_int, sample_source)

NAME = "sae"
HELP = "train sparse autoencoders on video-token activations with SAELens, and read their features on the frames"


def _positions(text: str):
    """``video`` / ``question`` / ``last`` / ``video,question`` / ``all`` -> the position spec."""
    if text == "all":
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return parts[0] if len(parts) == 1 else parts


def _add_clip_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_sample_arguments(p)
    p.add_argument("--synthetic", default=None, metavar="TASK[,TASK...]",
                   help="instead of --data: clips of the bundled synthetic tasks (videolens.sources.synthetic), "
                        "made in memory")
    p.add_argument("--n-clips", type=positive_int, default=50, metavar="N", help="--synthetic clips per task (default 50)")
    p.add_argument("--clip-seed", type=int, default=0, help="--synthetic seed (default 0)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="sae_command", required=True, parser_class=type(p))
    t = sub.add_parser("train", help="train an SAE on one hook point (SAELens' trainer); resumable",
                       description="train an SAE on one hook point's activations (SAELens' trainer); rerun to resume")
    _add_clip_arguments(t)
    t.add_argument("--hook", required=True, help="hook point, e.g. blocks.2.hook_resid_post")
    t.add_argument("--positions", default="video",
                   help="positions of each clip: video, question, last, frame:3, a comma list, or all (default video)")
    from videolens.saes.training import ARCHITECTURES

    t.add_argument("--architecture", default="standard", choices=list(ARCHITECTURES), help="SAELens architecture")
    t.add_argument("--d-sae", type=positive_int, default=None, help="features (default: expansion factor x width)")
    t.add_argument("--expansion-factor", type=positive_int, default=4)
    t.add_argument("--l1-coefficient", type=bounded_float(0), default=1.0, help="standard SAE sparsity (default 1)")
    t.add_argument("--k", type=positive_int, default=32, help="topk / batchtopk features kept (default 32)")
    t.add_argument("--l0-coefficient", type=bounded_float(0), default=1.0, help="jumprelu sparsity (default 1)")
    t.add_argument("--normalize-activations", default="none", choices=["none", "expected_average_only_in"],
                   help="SAELens' input normalisation (default none, as SAELens)")
    t.add_argument("--lr", type=bounded_float(0, low_open=True), default=3e-4)
    t.add_argument("--lr-scheduler", default="constant", help="SAELens lr_scheduler_name (default constant)")
    t.add_argument("--lr-warm-up-steps", type=int, default=0)
    t.add_argument("--training-samples", type=positive_int, default=100_000, metavar="N",
                   help="activation rows to train on (default 100000)")
    t.add_argument("--batch-size", type=positive_int, default=256, help="rows per step (default 256)")
    t.add_argument("--checkpoints", type=int, default=4, help="checkpoints during training (default 4)")
    t.add_argument("--clips-per-fill", type=positive_int, default=16, help="clips pooled per shuffle (default 16)")
    t.add_argument("--seed", type=int, default=0, help="SAE init, clip order and shuffles (default 0)")
    t.add_argument("--eval-clips", type=int, default=0, metavar="N",
                   help="hold out the last N clips and report the SAE on them (default 0: training rows)")
    t.set_defaults(_sub=_train)
    f = sub.add_parser("features", help="a feature over clips: top clips, on the frames, logit effect, ablation",
                       description="read one SAE feature over clips")
    _add_clip_arguments(f)
    f.add_argument("--sae", required=True, help="a trained SAE folder (OUT/final of sae train, or any SAELens SAE)")
    f.add_argument("--feature", type=int, required=True)
    f.add_argument("--top", type=positive_int, default=10, help="clips listed (default 10)")
    f.set_defaults(_sub=_features)


def run(args) -> int:
    return args._sub(args)


def _clips(args):
    """The clips and what they are (for the run identity)."""
    if args.synthetic:
        if args.data or args.video:
            raise ValueError("give --synthetic or --data/--video, not both")
        from videolens.sources.synthetic import TASKS, interleaved_samples

        tasks = [t.strip() for t in args.synthetic.split(",") if t.strip()]
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"--synthetic: unknown task(s) {unknown}; known: {', '.join(TASKS)}")
        samples = [s.to_videoqa() for s in interleaved_samples(tasks, args.n_clips, args.clip_seed)]
        return samples, {"synthetic": tasks, "n_clips": args.n_clips, "clip_seed": args.clip_seed}
    return load_samples(args), sample_source(args)


def _train(args) -> int:
    from videolens.saes.training import SAETrainingSettings, train_sae

    samples, data = _clips(args)
    if args.eval_clips >= len(samples):
        raise ValueError(f"--eval-clips {args.eval_clips}: only {len(samples)} clips")
    train, held = (samples[:-args.eval_clips], samples[-args.eval_clips:]) if args.eval_clips > 0 else (samples, [])
    model = load_model(args)
    settings = SAETrainingSettings(
        hook_name=args.hook, positions=_positions(args.positions), architecture=args.architecture, d_sae=args.d_sae,
        expansion_factor=args.expansion_factor, l1_coefficient=args.l1_coefficient, k=args.k,
        l0_coefficient=args.l0_coefficient, lr=args.lr, lr_scheduler_name=args.lr_scheduler,
        lr_warm_up_steps=args.lr_warm_up_steps, total_training_samples=args.training_samples,
        batch_size=args.batch_size, n_checkpoints=args.checkpoints, clips_per_fill=args.clips_per_fill,
        seed=args.seed, num_frames=getattr(args, "num_frames", None), normalize_activations=args.normalize_activations)
    _, summary = train_sae(model, train, settings, args.out, data={**data, "eval_clips": args.eval_clips},
                           eval_samples=held, progress=not args.no_progress, model_name=model_label(args))
    if summary.get("already_trained"):
        print(f"{args.out}: already trained (its training.json below); a new --out trains again")
    elif summary["resumed_from"]:
        print(f"resumed from {summary['resumed_from']}")
    print(f"SAE: {Path(args.out) / summary['final']}  ({summary['d_sae']} features on {args.hook}, {summary['trained_samples']} rows)")
    print(f"on {summary['evaluated_on']}: explained variance {summary['explained_variance']:.3f}, "
          f"MSE {summary['mse']:.4g}, L0 {summary['l0']:.1f}, dead features {summary['dead_features']}")
    return 0


def _features(args) -> int:
    import csv

    from sae_lens import SAE

    from videolens.running.samples import prepare_or_skip
    from videolens.plots.saes import plot_feature
    from videolens.saes.features import ablate_feature, direct_logit_effect, feature_map, top_activating
    from videolens.stats import RELATIVE_CHANGE, mean_ci

    if not Path(args.sae).is_dir() or not (Path(args.sae) / "cfg.json").is_file():
        raise FileNotFoundError(f"--sae {args.sae}: not an SAE folder (cfg.json and weights, as sae train writes OUT/final)")
    samples, _ = _clips(args)
    model = load_model(args)
    sae = SAE.load_from_disk(args.sae, device=str(model.cfg.device))
    model.check_sae(sae)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hits = top_activating(model, sae, samples, args.feature, k=args.top, progress=not args.no_progress)
    with open(out / "top.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sample_id", "task", "value", "slot", "row", "col"])
        for h in hits:
            w.writerow([h.sample_id, h.task, f"{h.value:.6g}", h.slot, h.row, h.col])
    print(f"feature {args.feature}: top clips")
    for h in hits:
        print(f"  {h.sample_id:<28} {h.task or '':<20} {h.value:9.4g}  slot {h.slot} row {h.row} col {h.col}")
    by_id = {s.sample_id: s for s in samples}
    rows = []
    for s in samples:
        if getattr(s, "open_ended", False):
            continue
        inputs, _, _ = prepare_or_skip(model, s, getattr(args, "num_frames", None))
        if inputs is not None:
            rows.append({"sample_id": s.sample_id, "task": s.task, **{k: v for k, v in ablate_feature(
                model, sae, inputs, args.feature).items() if not k.startswith("probs")}})
    if rows:
        with open(out / "ablation.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        m, lo, hi = mean_ci([r["rel_change"] for r in rows], bounds=RELATIVE_CHANGE)
        print(f"ablation at the video positions: relative change of the answer probability {float(m):+.3f}% "
              f"[{float(lo):+.3f}, {float(hi):+.3f}] over {len(rows)} clips")
    if hits:
        top = by_id[hits[0].sample_id]
        inputs = model.prepare(top, num_frames=getattr(args, "num_frames", None))
        print("direct logit effect on the option letters:", json.dumps({k: round(v, 4) for k, v in
                                                                        direct_logit_effect(model, sae, args.feature, inputs).items()}))
        if not args.no_figures:
            path = out / f"feature{args.feature}.png"
            import matplotlib.pyplot as plt

            plt.close(plot_feature(feature_map(model, sae, inputs, args.feature), path))
            print(f"figure: {path}")
    return 0
