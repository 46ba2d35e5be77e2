"""``videolens demo``: the main job on the bundled tiny VideoLLM.

Writes a few synthetic TVBench-style clips (real mp4 files), answers them with the bundled model,
then runs the paper's cross-frame attention-knockout sweep on the correctly answered ones; writes
JSONL records, a CSV summary and figures, and prints where they are.
"""

from __future__ import annotations

from pathlib import Path

from .common import output_folder, positive_int

NAME = "demo"
HELP = "run the information-flow analysis of the bundled tiny VideoLLM on generated clips"


def add_arguments(p) -> None:
    from .common import add_model_arguments

    add_model_arguments(p)
    p.add_argument("--out", type=output_folder, default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--n-per-task", type=positive_int, default=3, help="generated clips per task (default 3)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the generated clips")
    p.add_argument("--target", default="cross-frame", help="knockout target (default cross-frame)")
    p.add_argument("--window", type=positive_int, default=None, help="knockout window (default: a third of the layers, odd)")
    p.add_argument("--samples", default="correct", choices=["correct", "wrong", "all", "correct_option"],
                   help="sweep the samples the model answers correctly (the paper's choice, default) or all; "
                        "with an untrained model 'all' is used")


def run(args) -> int:
    import torch

    with torch.no_grad():  # not torch.set_grad_enabled(False): a CLI run in-process must not leak it
        return _run(args)


def _run(args) -> int:
    from tqdm.auto import tqdm

    from videolens.sources import synthetic
    from videolens.running.records import RecordWriter

    from weights_conversion.writers import write_demo_standin

    from .common import default_model_path, load_model, run_frames

    out = Path(args.out)
    data_dir = out / "data"
    print(f"[1/3] writing {args.n_per_task} clips per task to {data_dir}")
    synthetic.write_dataset(data_dir, n_per_task=args.n_per_task, seed=args.seed)
    samples = synthetic.load_dataset(data_dir)
    if args.model is None:
        try:
            default_model_path()
        except FileNotFoundError:
            args.model = str(write_demo_standin(out / "standin-model"))
            print(f"  the bundled model is not in this install; using an UNTRAINED stand-in written to {args.model}\n"
                  "  (its answers are chance: the run shows the pipeline, not findings; pass --model DIR for a real one)")
    model = load_model(args)

    print(f"[2/3] answering {len(samples)} samples")
    per_task: dict = {}
    with RecordWriter(out / "answers.jsonl", {"model": args.model or "bundled", "model_fingerprint": model.fingerprint,
                                               "seed": args.seed, "n_per_task": args.n_per_task}) as w:
        for s in tqdm(samples, desc="answer", unit="sample"):
            inputs = model.prepare(s, num_frames=args.num_frames)
            probs = model.option_probs(inputs)
            chosen = max(probs, key=probs.get)
            if not w.is_done(s.sample_id):
                w.write_sample(s.sample_id, [{"task": s.task, "probs": probs, "answer": chosen,
                                              "truth": s.answer_letter, "correct": chosen == s.answer_letter}])
            per_task.setdefault(s.task, []).append(chosen == s.answer_letter)
    for task, hits in per_task.items():
        print(f"  {task:22s} accuracy {sum(hits) / len(hits):6.1%} ({sum(hits)}/{len(hits)})")

    print(f"[3/3] attention knockout sweep: target {args.target}")
    from videolens.knockout import KnockoutSettings, get_target, run_dataset
    from videolens.knockout.summary import write_summary_csv
    from videolens.plots.knockout import plot_target

    target = get_target(args.target)
    window = args.window if args.window is not None else max(1, (model.cfg.n_layers // 3) | 1)
    sample_mode = args.samples if model.checkpoint_config.get("videolens_note") is None else "all"
    flow_dir = out / "flow"
    config = {"command": "demo", "model": args.model or "bundled", "model_fingerprint": model.fingerprint,
              "dtype": args.dtype, "num_frames": run_frames(args, model)}
    settings = KnockoutSettings(targets=(target,), window=window, samples=sample_mode)
    records = run_dataset(model, samples, settings, flow_dir, num_frames=args.num_frames, config=config)
    if records:  # the model loaded once serves both steps
        write_summary_csv(records, flow_dir / "summary.csv")
        plot_target(records, target.name, path=flow_dir / f"flow_{target.name}.png",
                    title=f"{target.name}: {model.cfg.n_layers} layers, window {window}, "
                          f"n = {len({r['sample_id'] for r in records})}")
    else:
        print("  no sample passed the sample filter: no figure")
    print(f"\nrecords and figures are in {out.resolve()}:")
    print(f"  {out / 'answers.jsonl'}  (option probabilities per sample)")
    for p in sorted(q for q in flow_dir.glob("*") if not q.name.startswith(".")):  # not the lock files
        print(f"  {p}")
    (out / "README.txt").write_text(
        "answers.jsonl: option probabilities per sample\nflow/: knockout records (JSONL), summary CSV, figures (PNG)\n"
    )
    return 0
