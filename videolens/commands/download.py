"""``videolens download MODEL|BENCHMARK``: fetch a checkpoint or a benchmark's tasks into the huggingface_hub cache ahead of a job
on a machine without a network (then run there with ``HF_HUB_OFFLINE=1``)."""

from __future__ import annotations

NAME = "download"
HELP = ("fetch a known checkpoint or hub id (configs, tokenizer, safetensors), or a benchmark's tasks "
        "(tvbench[:task,...]), into the huggingface_hub cache")


def add_arguments(p) -> None:
    from videolens.sources.datasets import DATASETS

    p.add_argument("model", help="a known name (videolens models), a hub id org/name, or a benchmark NAME[:task,...] "
                   f"({', '.join(DATASETS)})")
    p.add_argument("--revision", default=None, help="branch, tag or commit")
    p.add_argument("--cache-dir", default=None, help="huggingface_hub cache folder (default: HF_HOME's)")


def run(args) -> int:
    from videolens.sources.datasets import fetch, is_benchmark_spec
    from videolens.sources.hub import resolve_checkpoint

    if is_benchmark_spec(args.model):
        from videolens.sources.datasets import parse_spec

        files, roots = fetch(args.model, args.revision, args.cache_dir, need_video_root=False)
        elsewhere = parse_spec(args.model)[0].videos_elsewhere
        for f, r in zip(files, roots):
            print(f"{f}  (videos: {r if r is not None else 'not on the hub'})")
        if elsewhere:
            print(f"{elsewhere}; then run with --data {args.model} --video-root DIR")
        return 0
    print(f"{args.model}: {resolve_checkpoint(args.model, args.revision, args.cache_dir)}")
    return 0
