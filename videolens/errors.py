"""``VideolensError``: the base of every error the library raises on purpose.

Catch it to tell a videolens refusal (bad checkpoint, video, prompt, spec, knockout, run folder)
from a bug. Each subclass also derives from the built-in type it replaced (``ValueError``,
``KeyError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["VideolensError"]


class VideolensError(Exception):
    """Base of every error videolens raises on purpose (the message says what was expected)."""
