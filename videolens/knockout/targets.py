"""The paper's knockout targets as data (Map the Flow's methods), and a registry users extend.

A target is a list of named edge pairs; a sweep knocks out each pair separately, in a window of
layers around every layer. Token group names are those of ``TokenLayout.positions`` (``video``,
``frame:i``, ``frames_before:i``, ``question``, ``non_option_question``, ``true_option``,
``false_options``, ``option:X``, ``last``, ``span:a:b``, ...); relations those of
``videolens.hooked.edges.RELATIONS``.

Example::

    from videolens.knockout import Target, register_target
    register_target(Target("video-to-last", ("video->last",), "video tokens read by the last position"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Tuple, Union

from ..hooked.edges import EdgePair, as_pairs
from ..registry import Registry, UnknownNameError

__all__ = ["Target", "TARGETS", "register_target", "get_target", "UnknownTargetError"]


class UnknownTargetError(UnknownNameError):
    """No target of that name (the message lists the known ones)."""


@dataclass(frozen=True)
class Target:
    """A knockout target: edge pairs swept separately.

    Attributes:
        name: registry name (``"cross-frame"``).
        pairs: ``EdgePair`` s or ``"KEY->QUERY[relation]"`` strings; each is one knockout condition.
        description: one line for listings and figure titles.
        source: where it comes from (paper section / finding).
    """

    name: str
    pairs: Tuple[EdgePair, ...]
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", as_pairs(self.pairs))
        if not self.pairs:
            raise ValueError(f"target {self.name!r} has no edge pairs")
        labels = [p.label for p in self.pairs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"target {self.name!r} has duplicate pair labels {labels}")


TARGETS: Registry[Target] = Registry("knockout target")


def register_target(target: Target, overwrite: bool = False) -> Target:
    """Add a target to the registry (``videolens flow --target NAME`` and ``sweep(target=NAME)``).

    Raises:
        ValueError: the name is taken and ``overwrite`` is False.
    """
    return TARGETS.register(target.name, target, overwrite)


def get_target(target: Union[str, Target, EdgePair, Iterable]) -> Target:
    """A registered target by name, a ``Target`` as is, or edge pairs as an ad-hoc target.

    Raises:
        UnknownTargetError: unknown name (lists the known ones).
    """
    if isinstance(target, Target):
        return target
    if isinstance(target, str) and "->" not in target:
        if target not in TARGETS:
            raise UnknownTargetError(f"unknown knockout target {target!r}; known targets: {', '.join(sorted(TARGETS))}")
        return TARGETS[target]
    pairs = as_pairs(target)
    return Target("+".join(p.label for p in pairs), pairs, "custom edge pairs")


_PAPER = "Kim et al. 2026 (Map the Flow), methods"

for _t in (
    Target(
        "cross-frame",
        (EdgePair("video", "video", "cross_frame", name="cross-frame"),),
        "video tokens of frame j -> video tokens of every later frame i (within-frame edges kept)",
        _PAPER + ", Finding 1",
    ),
    Target(
        "vql-to-ql",
        ("video->question", "video->last", "question->last", "last->last"),
        "video, question and last position -> question and last position",
        _PAPER + ", Findings 2-3 (last->last blocks the last position's edge to itself, as the official code)",
    ),
    Target(
        "question-and-options-to-last",
        ("non_option_question->last", "true_option->last", "false_options->last"),
        "question text, true option and false options -> last position",
        _PAPER + ", Finding 3",
    ),
    Target(
        "vq-to-true-opt",
        ("video->non_option_question", "non_option_question->true_option", "video->true_option"),
        "video and question text -> the true option's tokens",
        _PAPER + ", Finding 2",
    ),
):
    register_target(_t)
