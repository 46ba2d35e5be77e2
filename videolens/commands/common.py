"""Argument helpers shared by CLI commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from videolens.argtypes import bounded_float, non_negative_int, positive_int  # noqa: F401 (the commands' types)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def add_model_arguments(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--model", required=required, default=None,
                   help="checkpoint folder, known name (videolens models) or hub id org/name, fetched into the "
                        "huggingface_hub cache (default: the bundled tiny model)")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of a hub --model")
    p.add_argument("--device", type=parse_device, default=None,
                   help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="weights dtype")
    p.add_argument("--num-frames", type=positive_int, default=None,
                   help="frames sampled per video (default: the frames a family option below implies, as the "
                        "official scripts do, else the checkpoint's num_frames, else 8)")
    p.add_argument("--template", default=None, metavar="NAME",
                   help="prompt template overriding the checkpoint's (videolens.prompting.prompts.TEMPLATES), e.g. eval_vcgbench "
                        "for VCGBench's official open-ended prompt")
    group = p.add_argument_group("family options", "config.json entries a checkpoint family lets you override "
                                 "(refused for a family that does not declare them; videolens models --options)")
    for opt in family_options().values():
        group.add_argument(opt.flag, dest=opt.name, type=opt.parse, default=None, metavar=opt.metavar, help=opt.help)


def family_options() -> dict:
    """The load-time options the checkpoint families declare (``weights_conversion.options``)."""
    from weights_conversion.registry import model_options

    return model_options()


def parse_device(text: str) -> str:
    """``--device``: a torch device this machine has (``videolens.hooked.loading.check_device``), checked
    before any model loads; argparse reports the ArgumentTypeError in one line."""
    from videolens.hooked.loading import check_device

    try:
        return check_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def output_folder(text: str) -> str:
    """``--out``: a folder (it may not exist yet), refused when it or a folder above it is a file,
    or when it cannot be written."""
    import os

    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; expected an output folder")
    above = next((p for p in path.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {above} is a file, so no folder can be made below it")
    target = path if path.exists() else above
    if target is not None and not os.access(target, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: {target} is not writable")
    return text


def sharded_run(out: Path, name: str, config: Dict[str, Any], samples, retry_skipped: bool, work):
    """Run ``work(samples, writer)`` into ``out/<name>`` through a ``RecordWriter``; under torchrun on
    this rank's share of ``samples`` into ``out/ranks/rank<r>/<name>``, then (rank 0, once every rank
    finished) merged into ``out/<name>`` (``videolens.running.distributed``).

    Returns:
        ``(records, result of work)`` in a one-process run and on rank 0 (the records of the whole
        file, or in a sharded run the merged records of ``samples``); None on the other ranks.
    """
    from videolens.running import distributed as dist
    from videolens.running.records import RecordWriter

    rank, size = dist.world()
    with RecordWriter(dist.rank_folder(out) / name, config, retry_skipped=retry_skipped) as writer:
        result = work(dist.shard(samples), writer)
        if size == 1:
            return writer.records(), result
    dist.barrier()
    if rank != 0:
        return None
    return dist.merge_records(out, name, [s.sample_id for s in samples], config), result


def sharded_samples(args, model, out: Path, name: str, config: Dict[str, Any], samples, per_sample,
                    desc: str) -> Optional[Tuple[List[Dict[str, Any]], Dict[str, int]]]:
    """``sharded_run`` of ``videolens.running.samples.run_samples(per_sample)`` with the command's --num-frames,
    --no-progress and --no-retry-skipped, and its counts line printed (``desc: N sample(s) done, ...``).

    Returns:
        ``(records of out/<name>, this process's counts)`` (one-process run and rank 0), or None on
        the other ranks of a torchrun run (their share is written; rank 0 merges).
    """
    from videolens.running.samples import run_samples

    done = sharded_run(out, name, config, samples, not args.no_retry_skipped,
                       lambda mine, writer: run_samples(model, mine, writer, per_sample, num_frames=args.num_frames,
                                                        desc=desc, progress=not args.no_progress))
    if done is None:
        return None
    records, counts = done
    print(f"{desc}: {counts['done']} sample(s) done, {counts['skipped']} already done, {counts['errors']} error(s); "
          f"records in {out / name}")
    return records, counts


def load_model(args, path=None, num_frames=None):
    """The HookedVideoLLM named by --model (or ``path``, or the bundled default), with --device,
    --dtype, --num-frames (or ``num_frames``) and the family options given applied; --revision
    belongs to --model alone (a second model, ``path``, is fetched at its default revision).
    ``args`` is left as parsed: the frames a run uses are ``run_frames(args, model)``."""
    from videolens.hooked.model import HookedVideoLLM

    revision = getattr(args, "revision", None) if path is None else None  # --revision is --model's
    path = path or args.model or str(default_model_path())
    from videolens.running.distributed import rank_device

    options = {name: getattr(args, name, None) for name in family_options()}
    model = HookedVideoLLM.from_pretrained(path, device=rank_device(args.device), dtype=DTYPES[args.dtype],
                                           num_frames=num_frames or getattr(args, "num_frames", None),
                                           revision=revision, **{k: v for k, v in options.items() if v is not None})
    if getattr(args, "template", None):
        from videolens.prompting.prompts import get_template

        model.template = get_template(args.template)
    return model


def require_options(samples, command: str) -> None:
    """Refuse open-ended samples (no options) in a multiple-choice analysis, naming the first.

    Raises:
        ValueError: ``<sample id> is an open-ended question (no options): <command> needs options ...``.
    """
    first = next((s for s in samples if getattr(s, "open_ended", False)), None)
    if first is not None:
        hint = "; run videolens flow --open-ended" if command == "flow" else ""
        raise ValueError(f"{first.sample_id} is an open-ended question (no options): {command} needs multiple-choice "
                         f"samples{hint}")


def default_model_path() -> Path:
    """The bundled tiny model shipped inside the package (``videolens.bundled_model_path``)."""
    from videolens.bundled import bundled_model_path

    return bundled_model_path()


def add_video_arguments(g, required: bool = False) -> None:
    """``--video --question --candidates [--answer --start --end]``: one sample."""
    g.add_argument("--video", required=required, default=None, help="one video file" + ("" if required else " (instead of --data)"))
    g.add_argument("--question", required=required, default=None)
    g.add_argument("--candidates", nargs="+", required=required, default=None, help="the options, in order (2 or more)")
    g.add_argument("--answer", default=None, help="the right option, when known (default: the first candidate)")
    g.add_argument("--start", type=bounded_float(0), default=None, help="clip start (s)")
    g.add_argument("--end", type=bounded_float(0, low_open=True), default=None, help="clip end (s)")


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    """``--data/--video-root`` (a dataset) or ``--video/--question/--candidates`` (one sample), ``--out``."""
    from videolens.sources.datasets import DATASETS
    from videolens.sources.formats import FORMATS

    g = p.add_argument_group("samples (a TVBench-format file, or one video)")
    g.add_argument("--data", default=None, nargs="+", metavar="FILE|BENCHMARK",
                   help="annotation file(s) (TVBench / MVBench, TOMATO, LongVideoBench, Video-MME, VCGBench format, "
                        "detected from the content) with --video-root, or a benchmark by name, NAME[:task,...]: "
                        f"{', '.join(DATASETS)} (fetched into the huggingface_hub cache; where a benchmark's videos are "
                        "not on the hub, tomato's, add --video-root)")
    g.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                   help="annotation format of --data (default: detected per file)")
    g.add_argument("--video-root", default=None, help="folder the 'video' entries of --data files are relative to (with a benchmark name: only one whose videos are not on the hub)")
    g.add_argument("--limit", type=positive_int, default=None, metavar="N", help="only the first N samples of each --data file")
    add_video_arguments(g)
    p.add_argument("--out", type=output_folder, required=True, help="output folder (records and figures)")
    p.add_argument("--no-figures", action="store_true", help="write records only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-retry-skipped", action="store_true",
                   help="on resume, keep samples an earlier run skipped (missing video, unreadable file) as they are "
                        "(default: run them again)")


def load_samples(args, answer_required: bool = False) -> list:
    """The VideoQA samples named by the arguments.

    Raises:
        ValueError: neither or both of --data and --video, or missing --video-root / --question /
            --candidates / --answer (when required).
        FileNotFoundError, videolens.sources.data.AnnotationError: from the annotation file.
    """
    from videolens.sources.formats import load_annotation_files

    if bool(args.data) == bool(args.video):
        raise ValueError("give either --data FILE --video-root DIR, or --video FILE --question ... --candidates ...")
    if args.data:
        files, roots = _data_files(args)
        samples = load_annotation_files(files, roots, args.limit, args.format)
        if not samples:
            raise ValueError(f"no samples in {args.data}")
        return samples
    if not args.question or not args.candidates:
        raise ValueError("--video needs --question and --candidates")
    if answer_required and not args.answer:
        raise ValueError("--answer is needed to mark the true and false options")
    return [one_sample(args)]


def _data_files(args):
    """``(annotation files, their video folder(s))`` of ``--data``: files with ``--video-root``, or
    benchmarks by name (``tvbench[:task,...]``, fetched with huggingface_hub: ``videolens.sources.datasets``;
    ``--video-root`` then only for one whose videos are not on the hub).
    Kept on ``args`` so the run's identity (``sample_source``) names the files actually read."""
    from videolens.sources.datasets import fetch, is_benchmark_spec

    named = [d for d in args.data if is_benchmark_spec(d)]
    if named:
        if len(named) != len(args.data):
            raise ValueError("--data: give benchmark names (tvbench[:task,...]) or annotation files, not both")
        files, roots = [], []
        for d in named:  # --video-root only for a benchmark whose videos are not on the hub (TOMATO)
            f, r = fetch(d, video_root=args.video_root)
            files += f
            roots += r
    else:
        if not args.video_root:
            raise ValueError("--data needs --video-root (the folder its 'video' entries are relative to), "
                             "or a benchmark name such as tvbench")
        if not Path(args.video_root).is_dir():
            raise FileNotFoundError(f"--video-root {args.video_root}: no such folder")
        files, roots = list(args.data), args.video_root
    args.data_files, args.video_roots = [str(f) for f in files], roots
    return files, roots


def one_sample(args):
    """The VideoQA of ``--video --question --candidates [--answer --start --end]``.

    Raises:
        FileNotFoundError: --video does not exist.
        ValueError: the question or candidates fail ``VideoQA``'s checks (named as arguments).
    """
    from videolens.sources.data import VideoQA

    if not Path(args.video).is_file():
        raise FileNotFoundError(f"--video {args.video}: no such file")
    try:
        return VideoQA(video=args.video, question=args.question, candidates=args.candidates,
                       answer=args.answer if args.answer is not None else args.candidates[0],
                       start=args.start, end=args.end)
    except ValueError as exc:
        raise ValueError(f"--question/--candidates/--answer/--start/--end: {exc}") from None


def sample_source(args) -> Dict[str, Any]:
    """What the samples come from, for the run config (a resumed run must read the same data):
    the annotation files' hashes and the video root (``videolens.fingerprint.data_fingerprint``),
    or the one video's digest with its question and options."""
    from videolens.fingerprint import data_fingerprint, file_digest

    if args.data:
        files = getattr(args, "data_files", None) or args.data
        roots = getattr(args, "video_roots", None) or args.video_root
        fp = data_fingerprint(files, roots if isinstance(roots, (str, Path)) else None)
        if not isinstance(roots, (str, Path)):
            fp["video_roots"] = [str(Path(r).resolve()) for r in roots]
        return {"data": fp, "format": args.format}
    return {"video": str(Path(args.video).resolve()), "video_digest": file_digest(args.video),
            "question": args.question, "candidates": args.candidates, "answer": args.answer,
            "start": args.start, "end": args.end}


def run_frames(args, model) -> int:
    """Frames per clip of this run: --num-frames, else the model's default (the one rule of
    ``weights_conversion.options.default_num_frames``, applied at load)."""
    return args.num_frames or model.default_num_frames


def run_config(args, model, command: str, **settings) -> Dict[str, Any]:
    """A run's identity for its records header: command, model (name and fingerprint of its files),
    dtype, frames and the video grid they give, the data (``sample_source``) and the command's own
    ``settings``. ``videolens.running.records.RecordWriter`` refuses to resume into a folder whose header differs."""
    return {"command": command, "model": model_label(args),
            "model_fingerprint": getattr(model, "fingerprint", None), "dtype": args.dtype,
            "num_frames": run_frames(args, model), **_video_grid(model, run_frames(args, model)),
            **sample_source(args), **settings,
            **({"template": args.template} if getattr(args, "template", None) else {})}


def model_label(args) -> str:
    """The model a run names in its identity: a folder (resolved), a known name or hub id, or
    ``bundled:tiny-videollm`` (the fingerprint ties each to its weights)."""
    if not args.model:
        return "bundled:tiny-videollm"
    return str(Path(args.model).resolve()) if Path(args.model).is_dir() else str(args.model)


def _video_grid(model, num_frames: int) -> Dict[str, Any]:
    """The run's video-token grid, or for a front end whose grid follows each video's frame size
    (a token budget or pixel bounds) the budget that sets it."""
    if model.vision.frame_size_dependent:  # a visual-token budget or pixel bounds
        pp = model.vision.preprocess
        return {"video_grid": None, "frame_budget": {k: getattr(pp, k) for k in
                                                      ("min_tokens", "max_tokens", "min_pixels", "max_pixels")
                                                      if hasattr(pp, k)}}
    return {"video_grid": list(model.vision.output_grid(num_frames))}
