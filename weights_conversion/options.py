"""Settings a checkpoint family declares: config.json entries a user may override at load time.

The official scripts override some config entries when they load a checkpoint (a pooling shape, a
visual-token budget). A family declares each such setting once, as a ``FamilyOption``; the generic
``HookedVideoLLM.from_pretrained(path, **options)`` and every CLI command (one ``--flag`` per
declared option, built from this table) pass them through without naming them. A value for an
option the checkpoint's family does not declare is refused in one line.

The frame count follows one rule (``default_num_frames``): the frames an explicitly given option
implies (a pooling shape's first entry, the official scripts' rule), else config.json's
``num_frames``, else ``videolens.sources.video.DEFAULT_NUM_FRAMES`` (the paper's 8). What the
official scripts set for each model: docs/methods.md#checkpoint-settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

from videolens.argtypes import int_triple as parse_int_triple
from videolens.argtypes import positive_int as parse_positive_int
from videolens.sources.video import DEFAULT_NUM_FRAMES

__all__ = ["FamilyOption", "default_num_frames", "positive_int_value", "int_triple_value", "parse_int_triple",
           "parse_positive_int"]


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def positive_int_value(name: str, v) -> int:
    """``v`` when it is a positive integer. Raises ValueError naming ``name``."""
    if not _positive_int(v):
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


def int_triple_value(name: str, v) -> list:
    """``v`` as a list of three positive integers. Raises ValueError naming ``name``."""
    if isinstance(v, str) or not hasattr(v, "__len__") or len(v) != 3 or not all(_positive_int(x) for x in v):
        raise ValueError(f"{name} must be three positive integers (frames, rows, cols), got {v!r}")
    return list(v)


@dataclass(frozen=True)
class FamilyOption:
    """One config.json entry a family lets a user override at load time.

    Attributes:
        name: the keyword of ``from_pretrained`` and the config.json key (``--name-with-dashes`` on
            the command line).
        check: ``check(name, value) -> value`` for a Python value; raises ValueError.
        parse: the argparse type reading the command-line text.
        help: one line for ``--help`` (what it sets and where the official scripts set it).
        metavar: the command line's placeholder.
        frames: the frame count a given value implies (None: it implies none).
    """

    name: str
    check: Callable[[str, Any], Any]
    parse: Callable[[str], Any]
    help: str
    metavar: str = "N"
    frames: Optional[Callable[[Any], int]] = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def value(self, v):
        """The checked value (None stays None)."""
        return None if v is None else self.check(self.name, v)


def default_num_frames(config: Mapping, given: Mapping[str, Any], options: Mapping[str, FamilyOption]) -> int:
    """Frames ``prepare`` samples by default: the frames an explicitly given option implies (e.g. a
    pooling shape's first entry, the official scripts' rule), else config.json's ``num_frames``,
    else ``DEFAULT_NUM_FRAMES``."""
    for name, v in given.items():
        opt = options.get(name)
        if v is not None and opt is not None and opt.frames is not None:
            return int(opt.frames(v))
    return int(config.get("num_frames") or DEFAULT_NUM_FRAMES)


def options_table(families) -> Dict[str, FamilyOption]:
    """Every option any of ``families`` declares, by name (one declaration per name).

    Raises:
        ValueError: two families declare one name differently.
    """
    out: Dict[str, FamilyOption] = {}
    for fam in families:
        for opt in fam.options:
            if opt.name in out and out[opt.name] != opt:
                raise ValueError(f"option {opt.name!r} is declared differently by two families")
            out[opt.name] = opt
    return out
