"""``videolens models``: the known checkpoints (``videolens.sources.hub.MODELS``), their settings and
whether each is in the local huggingface_hub cache."""

from __future__ import annotations

NAME = "models"
HELP = "list the known checkpoints (hub ids, the paper's settings) and which are cached locally"


def add_arguments(p) -> None:
    p.add_argument("--cache-dir", default=None, help="huggingface_hub cache folder (default: HF_HOME's)")
    p.add_argument("--options", action="store_true",
                   help="list the load-time options each checkpoint family declares instead")


def _value(v) -> str:
    return "-".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _options(args) -> int:
    from weights_conversion.registry import FAMILIES

    by_name: dict = {}
    for key, fam in FAMILIES.items():
        by_name.setdefault(fam.name, ([], {}))[0].append(key)
        by_name[fam.name][1].update({o.name: o for o in fam.options})
    for name, (keys, opts) in by_name.items():
        print(f"{name} (config.json model_type[/architecture]: {', '.join(keys)})")
        for opt in opts.values():
            print(f"  {opt.flag} {opt.metavar}  (from_pretrained: {opt.name}=...)  {opt.help}")
        if not opts:
            print("  no options")
    return 0


def run(args) -> int:
    from videolens.sources.hub import MODELS, cached_snapshot

    if args.options:
        return _options(args)
    print(f"{'name':<28} {'hub id':<42} {'frames':>6} {'template':<24} {'options':<30} {'cached'}")
    for m in MODELS.values():
        opts = " ".join(f"{k}={_value(v)}" for k, v in m.options.items()) or "-"
        cached = cached_snapshot(m.hub_id, cache_dir=args.cache_dir)
        print(f"{m.name:<28} {m.hub_id:<42} {m.num_frames or '-':>6} {m.template or '(family)':<24} {opts:<30} "
              f"{cached if cached else 'no'}")
    return 0
