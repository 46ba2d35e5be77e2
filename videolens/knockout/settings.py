"""One validated settings object for a knockout sweep: what to block, where, and on which samples.

``KnockoutSettings`` is built and checked once at the edge (the CLI, a notebook call of ``sweep``
or ``run_dataset``) and passed down whole; ``check(model)`` adds the checks that need the model's
depth and head count. ``header()`` is the part of a run's identity the settings give (stored in a
records header; a resume with other settings is refused).

Example::

    from videolens.knockout import KnockoutSettings, run_dataset, sweep
    settings = KnockoutSettings(targets=("cross-frame", "vql-to-ql"), window=9, samples="correct")
    records = sweep(model, inputs, settings=settings)          # every target, one sample
    run_dataset(model, samples, settings, out="runs/flow")     # a dataset, resumable

Method notes (the paper's section, the official code's lines): docs/methods.md#attention-knockout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Tuple, Union

from ..hooked.edges import check_self_edges
from ..layers import resolve_heads
from .batched import check_batch_conditions
from .engine import ENGINES
from .targets import Target, get_target

__all__ = ["KnockoutSettings", "SAMPLE_MODES", "check_sample_mode", "check_window", "check_method", "check_centres"]

SAMPLE_MODES = ("correct", "wrong", "incorrect", "all", "correct_option")
"""Which samples an analysis keeps (official ``--sample_mode``): ``correct`` (the baseline's
full-vocabulary argmax token is the true letter; the paper's default), ``wrong`` or ``incorrect``
(it is not: the failure cases),
``all``, and ``correct_option`` (the argmax among the option letters is the true one: videolens'
earlier rule, a difference from the paper)."""


def check_sample_mode(samples: str) -> str:
    """Raises ValueError unless ``samples`` is one of ``SAMPLE_MODES``; returns it."""
    if samples not in SAMPLE_MODES:
        raise ValueError(f"samples must be one of {SAMPLE_MODES}, got {samples!r}")
    return samples


def check_window(window: int, n_layers: Optional[int] = None) -> None:
    """Raises ValueError unless ``window`` is a positive int, at most ``n_layers`` when given."""
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window must be a positive number of layers, got {window!r}")
    if n_layers is not None and window > n_layers:
        raise ValueError(f"window {window} is larger than the model's {n_layers} layers")


def check_method(method: str) -> str:
    """Raises ValueError unless ``method`` names a knockout engine (``ENGINES``); returns it."""
    if method not in ENGINES:
        raise ValueError(f"unknown knockout method {method!r}; known: {sorted(ENGINES)}")
    return method


def check_centres(layers: Optional[Tuple[int, ...]], n_layers: int) -> None:
    """Raises ValueError unless every centre layer lies in ``[0, n_layers)`` (None: every layer)."""
    bad = [l for l in (layers or ()) if not 0 <= l < n_layers]
    if bad:
        raise ValueError(f"centre layer(s) {bad} out of range for {n_layers} layers")


TargetsLike = Union[str, Target, Iterable]


@dataclass(frozen=True)
class KnockoutSettings:
    """The settings of a knockout sweep (Map the Flow's methods), validated when built.

    Attributes:
        targets: ``Target`` s, or registered names (``"cross-frame"``, ``"vql-to-ql"``, ...), or edge
            pairs (``"video->last"``: an ad-hoc target); one name or ``Target`` is one target.
        window: layers per knockout window, centred on each layer and clipped (paper: 9).
        layers: centre layers to sweep (None: every layer).
        heads: knock out these heads only (None: every head).
        samples: a ``SAMPLE_MODES`` entry (the paper's ``"correct"`` by default).
        self_edges: ``"block"`` (the official code: ``last->last`` blocks the last position's edge
            to itself) or ``"keep"`` (never block a self edge; a difference from the paper).
        method: ``"fast"`` (incremental recomputation) or ``"full"`` (a whole forward per condition).
        batch_conditions: with the fast engine, conditions per batch, or ``"auto"`` (the default,
            as the CLI's ``--batch-conditions``): as many as the free memory holds
            (``videolens.knockout.batched.auto_batch_size``); 1 runs them one by one. A speed setting
            only: the numbers agree up to float rounding, so it is not part of a run's identity.

    Raises (when built):
        UnknownTargetError: an unknown target name. ValueError: an empty target list, a window < 1,
        an unknown sample mode, self-edge rule or method, negative or repeated heads, or
        ``batch_conditions`` neither >= 1 nor ``"auto"``.
    """

    targets: Tuple[Target, ...]
    window: int = 9
    layers: Optional[Tuple[int, ...]] = None
    heads: Optional[Tuple[int, ...]] = None
    samples: str = "correct"
    self_edges: str = "block"
    method: str = "fast"
    batch_conditions: Union[int, str] = "auto"

    def __post_init__(self) -> None:
        targets = self.targets
        if isinstance(targets, (str, Target)):
            targets = (targets,)
        resolved = tuple(get_target(t) for t in targets)
        if not resolved:
            raise ValueError("knockout settings: no target")
        object.__setattr__(self, "targets", resolved)
        check_window(self.window)  # the model's depth is checked by check()
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))
        if self.heads is not None:
            object.__setattr__(self, "heads", tuple(resolve_heads(self.heads)))
        check_sample_mode(self.samples)
        check_self_edges(self.self_edges)
        check_method(self.method)
        check_batch_conditions(self.batch_conditions)

    @classmethod
    def from_options(cls, target: Optional[TargetsLike], options: Mapping, **defaults) -> "KnockoutSettings":
        """Settings from keyword options (``sweep(model, inputs, "cross-frame", window=9)``); a
        ``target`` given as a list of edge pairs is one ad-hoc target whose pairs are swept apart.

        Raises:
            TypeError: an option that is not a field. ValueError: no target.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"targets"}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unknown knockout option(s) {unknown}; known: {sorted(names)}")
        if target is None:
            raise ValueError("a knockout needs a target (or settings=KnockoutSettings(...))")
        return cls(targets=(get_target(target),), **{**defaults, **options})

    def replace(self, **changes) -> "KnockoutSettings":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def check(self, model) -> "KnockoutSettings":
        """The checks that need the model: window within its depth, centre layers and heads in range.

        Raises:
            ValueError: a window larger than the model, centre layers or heads out of range.
        """
        check_window(self.window, model.cfg.n_layers)
        check_centres(self.layers, model.cfg.n_layers)
        if self.heads is not None:
            resolve_heads(self.heads, model.cfg.n_heads)
        return self

    @property
    def target_names(self) -> list:
        return [t.name for t in self.targets]

    def header(self) -> dict:
        """The settings that identify a run (a records header's fields): targets, window, sample
        mode, self-edge rule, heads (and centre layers when not all). Method and batch size change no number, so they are not here."""
        out = {"targets": self.target_names, "window": self.window, "samples": self.samples,
               "self_edges": self.self_edges, "heads": None if self.heads is None else list(self.heads)}
        if self.layers is not None:  # older runs swept every centre and carry no such field
            out["layers"] = list(self.layers)
        return out

