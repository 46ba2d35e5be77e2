"""``videolens models``: the known checkpoints (``videolens.hub.MODELS``), their settings and
whether each is in the local huggingface_hub cache."""

from __future__ import annotations

NAME = "models"
HELP = "list the known checkpoints (hub ids, the paper's settings) and which are cached locally"


def add_arguments(p) -> None:
    p.add_argument("--cache-dir", default=None, help="huggingface_hub cache folder (default: HF_HOME's)")


def run(args) -> int:
    from videolens.hub import MODELS, cached_snapshot

    print(f"{'name':<28} {'hub id':<42} {'frames':>6} {'pooling':>9} {'template':<24} {'cached'}")
    for m in MODELS.values():
        pooling = "-".join(map(str, m.pooling_shape)) if m.pooling_shape else "-"
        cached = cached_snapshot(m.hub_id, cache_dir=args.cache_dir)
        print(f"{m.name:<28} {m.hub_id:<42} {m.num_frames or '-':>6} {pooling:>9} {m.template or '(family)':<24} "
              f"{cached if cached else 'no'}")
    return 0
