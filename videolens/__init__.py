"""videolens: TransformerLens-style mechanistic interpretability for Video LLMs.

Main entry points: ``HookedVideoLLM.from_pretrained``, ``VideoQA``, ``load_video``,
``load_annotations`` (TVBench/MVBench, TOMATO; ``videolens.formats``); analyses live in submodules (``knockout``, ``lens``, ``pathways``,
``patching``, ``viz``) imported on first use.
"""

import importlib as _importlib

from . import data
from .bundled import bundled_model_path
from .conventions import test_prompt
from .data import VideoQA, load_tvbench
from .formats import load_annotations
from .inputs import VideoLLMInput
from .layout import Span, TokenLayout
from .model import ContextLengthError, HookedVideoLLM
from .prompts import TEMPLATES, PromptTemplate
from .video import Video, VideoDecodeError, load_video

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
    "test_prompt",
]

_LAZY = ("knockout", "lens", "pathways", "patching", "viz", "synthetic", "runs", "corruptions")


def __getattr__(name):
    if name in _LAZY:
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'videolens' has no attribute {name!r}")
