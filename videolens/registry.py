"""``Registry``: the one name -> object table behind every extension point (knockout targets and
engines, token groups, edge relations and types, prompt templates, lens modes, patching
activations, random controls, checkpoint families, text backbones).

A registry is a ``dict`` (iterate, ``in``, ``items()`` as usual) whose missing keys raise
``UnknownNameError`` naming what was asked for and listing what exists, and whose ``register``
refuses to replace an entry unless told to.

Example::

    from videolens.knockout import TARGETS, Target
    TARGETS.register("video-to-last", Target("video-to-last", ("video->last",)))
"""

from __future__ import annotations

from typing import Dict, Generic, TypeVar

from .errors import VideolensError

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(VideolensError, KeyError):
    """A name no registry entry has (the message lists the known ones)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Dict[str, T], Generic[T]):
    """A named ``dict`` of extension points.

    Args:
        what: what the entries are, for messages (``"knockout target"``).
        entries: initial entries.
    """

    def __init__(self, what: str, entries: Dict[str, T] | None = None):
        super().__init__(entries or {})
        self.what = what

    def __missing__(self, key):
        raise UnknownNameError(f"unknown {self.what} {key!r}; known: {', '.join(sorted(map(str, self)))}")

    def register(self, name: str, value: T, overwrite: bool = False) -> T:
        """Add ``value`` under ``name``; returns it.

        Raises:
            ValueError: ``name`` is taken and ``overwrite`` is False.
        """
        if name in self and not overwrite:
            raise ValueError(f"a {self.what} named {name!r} exists; pass overwrite=True to replace it")
        self[name] = value
        return value
