"""Building a ``HookedVideoLLM`` from a checkpoint folder: conversion, tokenizer, strict weight
loading, fingerprint; and TransformerLens' optional weight processing (fold_ln, ...)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch

__all__ = ["check_device", "load_pretrained", "load_backbone_weights", "process_weights", "check_tokenizer"]

_BIAS_NAMES = ("b_in", "b_out", "b_Q", "b_K", "b_V", "b_O", "_b_K", "_b_V", "b_U", "b")


def _is_bias(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in _BIAS_NAMES


def check_device(device) -> str:
    """``device`` as given when this machine has it (``cpu``, ``cuda``, ``cuda:1``, ``mps``).

    Raises:
        ValueError: not a torch device, or one this machine lacks (one line, before anything loads).
    """
    text = str(device)
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{text!r}: CUDA is not available on this machine (use --device cpu / device='cpu')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{text!r}: MPS is not available on this machine (use --device cpu / device='cpu')")
    elif dev.type not in ("cpu", "cuda", "mps", "meta"):
        raise ValueError(f"expected cpu, cuda[:N] or mps, got {text!r}")
    return text


HUB_OPTIONS = ("revision", "cache_dir", "token", "local_files_only")
"""``from_pretrained`` keywords passed to ``videolens.sources.hub.resolve_checkpoint`` (huggingface_hub's)."""


def load_pretrained(cls, path: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
                    dtype: torch.dtype = torch.float32, num_frames: Optional[int] = None,
                    state_dict: Optional[Dict[str, torch.Tensor]] = None, **options):
    """``cls.from_pretrained`` without weight processing (see its docstring). ``options`` are the
    options the checkpoint's family declares (``weights_conversion.registry.model_options``) and
    ``HUB_OPTIONS``. A known checkpoint name or hub id (``videolens.sources.hub.MODELS``) brings its settings
    where the arguments leave them None.

    Raises:
        TypeError: a keyword that is neither a family option nor one of ``HUB_OPTIONS``.
        ValueError: an option the checkpoint's family does not declare, or a value it refuses.
    """
    from weights_conversion import convert_checkpoint
    from weights_conversion.checkpoint import CheckpointError, materialize_meta_buffers
    from weights_conversion.options import positive_int_value
    from weights_conversion.registry import model_options

    from ..fingerprint import quick_identity
    from ..sources.hub import known_model, resolve_checkpoint

    declared = model_options()
    unknown = sorted(set(options) - set(HUB_OPTIONS) - set(declared))
    if unknown:
        raise TypeError(f"from_pretrained got unexpected keyword(s) {unknown} (family options: {sorted(declared)}; "
                        f"hub options: {list(HUB_OPTIONS)})")
    hub = {k: v for k, v in options.items() if k in HUB_OPTIONS}
    overrides = {k: declared[k].value(v) for k, v in options.items() if k in declared and v is not None}
    if num_frames is not None:
        positive_int_value("num_frames", num_frames)
    known = None if Path(path).is_dir() else known_model(path)
    if known is not None:  # the paper's settings for this checkpoint; explicit arguments win
        implies_frames = any(declared[k].frames is not None for k in overrides)
        if num_frames is None and not implies_frames:
            num_frames = known.num_frames
        overrides = {**known.options, **overrides}
    path = resolve_checkpoint(path, **hub)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    tokenizer_files = ("tokenizer.json", "tokenizer.model", "vocab.json")
    if (Path(path) / "config.json").is_file() and not any((Path(path) / f).is_file() for f in tokenizer_files):
        raise CheckpointError(f"{path}: no tokenizer files (tokenizer.json, tokenizer.model or vocab.json + merges.txt); "
                              "copy the checkpoint's tokenizer files into the folder")
    conv = convert_checkpoint(path, dtype=dtype, device=str(device), overrides=overrides, tensors=state_dict)
    if num_frames is None:
        num_frames = conv.num_frames
    try:
        tokenizer = load_tokenizer(path)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot load the tokenizer saved with the checkpoint: {first}") from exc
    with torch.device("meta"):  # no allocation and random init of weights the checkpoint replaces
        model = cls(
            conv.cfg,
            conv.vision,
            tokenizer,
            conv.placeholder_id,
            conv.template,
            conv.family,
            rope=None,
            checkpoint_config=conv.config,
        )
    model.load_backbone_weights(conv.state_dict)  # assigns the converted tensors
    if conv.rope is not None:
        model.set_rope_tables(*conv.rope)
    materialize_meta_buffers(model, "language model", RuntimeError)  # IGNORE, mask; rotary tables were written
    if conv.rope_long is not None:  # LongRoPE: short and long tables, chosen per forward
        from .rope import RopeSwitch

        threshold, long = conv.rope_long
        model.rope_switch = RopeSwitch(int(threshold), conv.rope, long)
    with contextlib.redirect_stdout(sys.stderr):  # TL prints "Moving model to device"; stdout keeps results only
        model.to(device)
    model.vision.to(device)
    if model.rope_switch is not None:
        model.rope_switch.to(device)
    model.default_num_frames = int(num_frames)
    model.frame_sampler = conv.sampler
    if conv.mrope is not None:
        model.mrope = conv.mrope
    if known is not None and known.template:
        from ..prompting.prompts import get_template

        model.template = get_template(known.template)
    model.known = known
    check_tokenizer(model, path)
    if state_dict is None:
        model.checkpoint_path = str(path)  # model.fingerprint hashes its files when first read (a run header)
        model.identity = quick_identity(path)
    else:  # weights from memory: no files to identify them by
        model.checkpoint_path, model.identity = None, None
    return model.eval()


def check_tokenizer(model, path) -> None:
    """Refuse a tokenizer that does not fit the model, before anything runs: a two-option prompt of
    the model's template must tokenize with a single-token placeholder, option letters that are
    distinct known tokens, and every other id inside the embedding.

    Raises:
        weights_conversion.CheckpointError: naming the folder and what does not fit.
    """
    from weights_conversion.checkpoint import CheckpointError

    from ..prompting.inputs import PromptTokenizationError, tokenize_prompt

    try:
        tp = tokenize_prompt(model.tokenizer, model.template, "What happens?", ["first", "second"], model.placeholder_id,
                             (2, 1, 1), timestamps=[0.0, 1.0], n_trailing=model.vision.n_trailing)
    except PromptTokenizationError as exc:
        raise CheckpointError(f"{path}: the tokenizer does not fit the model: {exc}") from None
    ids = tp.tokens[tp.tokens != model.placeholder_id]
    ids = ids.tolist() + list(tp.option_token_ids.values())
    rows = model.cfg.d_vocab
    outside = sorted({i for i in ids if not 0 <= i < rows})
    if outside:
        raise CheckpointError(f"{path}: the tokenizer does not fit the model: token id(s) {outside[:8]} lie outside "
                              f"the embedding ({rows} rows)")


def load_tokenizer(path: Path):
    """The checkpoint's tokenizer exactly as its ``tokenizer.json`` is written (normalizer and
    pre-tokenizer included), which is what the official code's transformers 4.x ran; transformers
    5's ``AutoTokenizer`` rebuilds Llama-family tokenizers with its own defaults and splits, e.g.,
    ``</img>\n <|user|>\nQuestion`` differently (one token fewer on some chat templates' prompts). Without
    a tokenizer.json: ``AutoTokenizer``."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (Path(path) / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    import warnings

    with warnings.catch_warnings():  # transformers' notes on config.json fields it reads for the tokenizer
        warnings.simplefilter("ignore", FutureWarning)
        return AutoTokenizer.from_pretrained(str(path))


def load_backbone_weights(model, state_dict: Dict[str, torch.Tensor]) -> None:
    """Load TransformerLens weights into ``model``, requiring exactly the backbone's parameters.

    Raises:
        weights_conversion.MissingWeightsError / UnexpectedWeightsError naming the keys.
    """
    from weights_conversion.checkpoint import CheckpointError, MissingWeightsError, UnexpectedWeightsError

    params = {n: p for n, p in model.named_parameters() if not n.startswith("vision.")}
    state_dict = dict(state_dict)
    # biases the HF model does not have: TransformerLens converters emit some as zeros and
    # leave others out; a zero bias is exactly "no bias", anything else must match by name
    for k in sorted(set(state_dict) - set(params)):
        if _is_bias(k) and not state_dict[k].any():
            del state_dict[k]
    for k in sorted(set(params) - set(state_dict)):
        if _is_bias(k):
            state_dict[k] = torch.zeros(params[k].shape, dtype=model.cfg.dtype)
    missing = sorted(set(params) - set(state_dict))
    extra = sorted(set(state_dict) - set(params))
    if missing:
        raise MissingWeightsError(f"converted weights lack {missing[:20]}")
    if extra:
        raise UnexpectedWeightsError(f"converted weights have keys the model does not: {extra[:20]}")
    for k, v in state_dict.items():
        if tuple(v.shape) != tuple(params[k].shape):
            raise CheckpointError(f"{k}: shape {tuple(v.shape)}, expected {tuple(params[k].shape)}")
    model.load_state_dict(state_dict, strict=False, assign=True)


def process_weights(model, fold_ln: bool = False, center_writing_weights: bool = False, center_unembed: bool = False,
                    fold_value_biases: bool = False, refactor_factored_attn_matrices: bool = False) -> None:
    """TransformerLens' ``load_and_process_state_dict`` on the model's own weights (the vision
    front end passes through untouched); nothing happens when every option is False.

    Raises:
        ValueError: ``center_writing_weights`` on an RMSNorm backbone; ``refactor_factored_attn_matrices``
            on a rotary backbone (every family here).
    """
    opts = dict(fold_ln=fold_ln, center_writing_weights=center_writing_weights, center_unembed=center_unembed,
                fold_value_biases=fold_value_biases, refactor_factored_attn_matrices=refactor_factored_attn_matrices)
    if not any(opts.values()):
        return
    if center_writing_weights and model.cfg.normalization_type in ("RMS", "RMSPre"):
        raise ValueError("center_writing_weights needs LayerNorm; this backbone uses RMSNorm, where centring the "
                         "residual writes changes the outputs (TransformerLens skips it for such models)")
    if refactor_factored_attn_matrices and model.cfg.positional_embedding_type == "rotary":
        raise ValueError("refactor_factored_attn_matrices is not defined for rotary attention (TransformerLens "
                         "refuses it): W_Q W_K^T is not a fixed bilinear form once keys and queries are rotated")
    if fold_ln and model.cfg.normalization_type in ("RMSPre", "LNPre"):
        opts["fold_ln"] = False  # already folded
    model.load_and_process_state_dict(model.state_dict(), **opts)
