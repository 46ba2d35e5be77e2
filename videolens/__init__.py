"""videolens: TransformerLens-style mechanistic interpretability for Video LLMs.

Main entry points: ``HookedVideoLLM.from_pretrained``, ``VideoQA``, ``load_video``,
``load_annotations`` (TVBench/MVBench, TOMATO; ``videolens.sources.formats``); analyses live in
submodules (``knockout``, ``lens``, ``pathways``, ``patching``, ``viz``) imported on first use.

The library's folders are its layers, each importing only those below it (tests/test_layering.py):
shared leaf modules (``errors``, ``registry``, ``layers``, ``stats``, ``fingerprint``, ``_tl_compat``, ``argtypes``,
``bundled``) < ``sources`` < ``prompting`` < ``frontend`` < ``weights_conversion`` < ``hooked`` <
``running`` < the analyses (``knockout``, ``lens``, ``pathways``, ``patching``) < ``plots`` / ``viz``
< ``commands`` / ``cli``. Modules that moved into the folders keep their old import paths
(``videolens._moved``).
"""

import importlib as _importlib

from . import _moved

_moved.install()

from .bundled import bundled_model_path, bundled_sae_path  # noqa: E402
from .hooked.conventions import test_prompt  # noqa: E402
from .hooked.model import ContextLengthError, HookedVideoLLM  # noqa: E402
from .prompting.inputs import VideoLLMInput  # noqa: E402
from .prompting.layout import Span, TokenLayout  # noqa: E402
from .prompting.prompts import TEMPLATES, PromptTemplate  # noqa: E402
from .sources import data  # noqa: E402
from .sources.data import VideoQA, load_tvbench  # noqa: E402
from .sources.formats import load_annotations  # noqa: E402
from .sources.video import Video, VideoDecodeError, load_video  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "HookedVideoLLM",
    "VideoQA",
    "VideoLLMInput",
    "TokenLayout",
    "Span",
    "Video",
    "VideoDecodeError",
    "ContextLengthError",
    "PromptTemplate",
    "TEMPLATES",
    "load_video",
    "load_tvbench",
    "load_annotations",
    "data",
    "bundled_model_path",
    "bundled_sae_path",
    "test_prompt",
]

_LAZY = ("knockout", "lens", "pathways", "patching", "viz", "plots", "sources", "prompting", "frontend", "hooked",
         "running", "stats", "layers")


def __getattr__(name):
    """Subpackages on first use, and the old names of moved modules (``vl.edges``, ``vl.runs``, ...)."""
    if name in _LAZY or name in _moved.MOVED:
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'videolens' has no attribute {name!r}")
