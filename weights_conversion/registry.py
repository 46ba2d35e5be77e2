"""The registry from a checkpoint's config.json to its family's converter.

A family is data plus one ``convert`` function; adding one is a new module that calls
``register`` and one import line in ``weights_conversion/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
from transformer_lens import HookedTransformerConfig

from videolens.registry import Registry

from .checkpoint import CheckpointError, Weights, read_config
from .options import FamilyOption, default_num_frames, options_table
from .sizes import check_sizes_against_weights

__all__ = ["Family", "ConvertedModel", "FAMILIES", "register", "family_for_config", "convert_checkpoint", "preflight",
           "UnknownFamilyError", "video_token_id", "model_options", "REFUSED"]


class UnknownFamilyError(CheckpointError):
    """config.json names a model type no family handles."""


@dataclass
class ConvertedModel:
    """What a family's converter returns: everything HookedVideoLLM needs.

    Attributes:
        cfg: the language backbone's HookedTransformerConfig.
        state_dict: TransformerLens weights of the backbone.
        rope: (sin, cos) tables ``[n_ctx, d_head]`` to write into every block, or None.
        vision: the vision front end (``videolens.frontend.vision.VisionFrontEnd``).
        placeholder_id: token id of the video placeholder in the prompt.
        template: name of the prompt template (``videolens.prompting.prompts.TEMPLATES``).
        family: the family's name.
        config: the checkpoint's config.json.
        rope_long: for LongRoPE, ``(threshold, (sin, cos))`` long-factor tables used when a
            forward's positions pass ``threshold`` (``videolens.hooked.rope.RopeSwitch``); else None.
        mrope: for Qwen-VL, the ``videolens.frontend.qwen_vl.MRope`` that writes each input's 3-D position
            tables; else None.
        sampler: the family's own frame sampler (``videolens.sources.video.SAMPLERS``), used for every
            sample in place of the dataset's; None keeps the dataset's.
        num_frames: frames ``prepare`` samples by default (``options.default_num_frames``; set by
            ``convert_checkpoint``).
    """

    cfg: HookedTransformerConfig
    state_dict: Dict[str, torch.Tensor]
    rope: Optional[Tuple[torch.Tensor, torch.Tensor]]
    vision: torch.nn.Module
    placeholder_id: int
    template: str
    family: str
    config: dict
    rope_long: Optional[Tuple[int, Tuple[torch.Tensor, torch.Tensor]]] = None
    sampler: Optional[str] = None
    mrope: Optional[object] = None
    num_frames: int = 0


@dataclass(frozen=True)
class Family:
    """A checkpoint family: the config.json ``model_type`` values it claims and its converter
    ``convert(path, config, weights, dtype, device) -> ConvertedModel``.

    ``architectures`` narrows the claim where several families share one ``model_type``: the family
    then handles a config only when its ``architectures`` list names one of these classes (the
    official PLLaVA classes save ``model_type "llava"`` with ``PllavaForConditionalGeneration``;
    the released checkpoints' layout). Empty: every config of those model types.

    ``options`` are the config.json entries a user may override at load time
    (``weights_conversion.options``); everything else family-specific lives in ``convert``.
    """

    name: str
    model_types: Tuple[str, ...]
    convert: Callable[[Path, dict, Weights, torch.dtype, str], ConvertedModel]
    description: str = ""
    architectures: Tuple[str, ...] = ()
    options: Tuple[FamilyOption, ...] = ()


REFUSED: Dict[str, str] = {
    "qwen3_vl_moe": "its mixture-of-experts text blocks (fused experts behind a top-k router) have no TransformerLens "
                    "conversion here (TransformerLens 3.9 converts Mixtral's and OLMoE's MoE blocks, not Qwen3's); the "
                    "dense Qwen3-VL checkpoints (model_type 'qwen3_vl', e.g. Qwen/Qwen3-VL-8B-Instruct) load",
}
"""Model types recognised but not converted, with the reason (one line each)."""

FAMILIES: Registry[Family] = Registry("checkpoint family")
"""Registry key -> family: ``model_type`` alone, or ``"model_type/Architecture"`` for families that
claim a shared model type by architecture."""


def video_token_id(config: dict, where: str) -> int:
    """The video placeholder id of a transformers VideoLLM config (``video_token_id``, or the older
    ``video_token_index``).

    Raises:
        CheckpointError: neither is set.
    """
    placeholder = config.get("video_token_id", config.get("video_token_index"))
    if placeholder is None:
        raise CheckpointError(f"{where}: no video_token_id")
    return int(placeholder)


def _keys(family: Family) -> list:
    return [f"{mt}/{a}" if a else mt for mt in family.model_types for a in (family.architectures or ("",))]


def register(family: Family) -> Family:
    """Add a family under each of its (model type, architecture) keys.

    Raises:
        ValueError: a key is already taken by another family.
    """
    for key in _keys(family):
        if key in FAMILIES:
            raise ValueError(f"{key!r} is already registered to {FAMILIES[key].name}")
        FAMILIES[key] = family
    return family


def model_options() -> Dict[str, FamilyOption]:
    """Every load-time option the registered families declare, by name (``from_pretrained``
    keywords and CLI flags)."""
    return options_table(dict.fromkeys(FAMILIES.values()))


def family_for_config(config: dict, path: Path | str = "checkpoint") -> Family:
    """The family that handles this config.json: by ``model_type``, and by the classes named in
    ``architectures`` where a model type is claimed per architecture.

    Raises:
        UnknownFamilyError: no ``model_type``, one no family handles, or architectures no family
            handles for that model type (the message lists the supported ones).
    """
    mt = config.get("model_type")
    archs = config.get("architectures") or []
    for arch in archs:
        if f"{mt}/{arch}" in FAMILIES:
            return FAMILIES[f"{mt}/{arch}"]
    if mt in FAMILIES:
        return FAMILIES[mt]
    if any(k.startswith(f"{mt}/") for k in FAMILIES):
        archs_ok = sorted(k.split("/", 1)[1] for k in FAMILIES if k.startswith(f"{mt}/"))
        raise UnknownFamilyError(
            f"{path}/config.json: model_type {mt!r} with architectures {archs} is not a supported VideoLLM "
            f"family; supported architectures for {mt!r}: {archs_ok}"
        )
    if mt in REFUSED:
        raise UnknownFamilyError(f"{path}/config.json: model_type {mt!r} is not supported: {REFUSED[mt]}")
    types = sorted({k.split("/", 1)[0] for k in FAMILIES})
    raise UnknownFamilyError(f"{path}/config.json: model_type {mt!r} is not a supported VideoLLM family; "
                             f"supported model types: {types}")


def preflight(path) -> Tuple[dict, Family, Optional[int]]:
    """What can be checked of a checkpoint without reading its weights: config.json (readable, its
    size fields typed), its family, and its text layer count where config.json states it (a
    ``text_config`` / ``llm_config`` section or the top level). Commands that load a second model
    later (``flow --compare-model``) call it at startup.

    Raises:
        FileNotFoundError / CheckpointError / UnknownFamilyError: as ``convert_checkpoint`` would.
    """
    config = read_config(Path(path))
    family = family_for_config(config, path)
    layers = None
    for section in (config.get("text_config"), config.get("llm_config"), config):
        if isinstance(section, dict) and isinstance(section.get("num_hidden_layers"), int):
            layers = section["num_hidden_layers"]
            break
    return config, family, layers


def convert_checkpoint(
    path, dtype: torch.dtype = torch.float32, device: str = "cpu", overrides: Optional[dict] = None,
    tensors: Optional[Dict[str, torch.Tensor]] = None,
) -> ConvertedModel:
    """Read a checkpoint folder and convert it with its family's converter.

    ``overrides`` are options the checkpoint's family declares (``Family.options``); they replace
    config.json entries before conversion (the official scripts' way: ``PllavaConfig.from_pretrained(path,
    pooling_shape=...)``); None values are ignored. The result's ``num_frames`` follows
    ``options.default_num_frames``. Every tensor in the checkpoint must be used: leftovers raise
    ``UnexpectedWeightsError`` and absent tensors ``MissingWeightsError``, both naming the keys.
    ``tensors``: the checkpoint's tensors under their on-disk names, used instead of the folder's
    weight files (a model built in memory).

    Raises:
        ValueError: an override the family does not declare, or a value its option refuses.
    """
    path = Path(path)
    config = read_config(path)
    family = family_for_config(config, path)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    declared = {o.name: o for o in family.options}
    for k, v in given.items():
        if k not in declared:
            known = ", ".join(declared) or "none"
            raise ValueError(f"{path}: {k} does not apply to a {family.name} checkpoint (its options: {known})")
        given[k] = declared[k].value(v)
    config.update(given)
    if tensors is not None:
        weights = Weights(tensors, f"{path} (in-memory tensors)")
    else:
        weights = Weights.from_folder(path, device)  # straight to the target device: no host copy of the model
    check_sizes_against_weights(config, weights, str(path))
    try:
        converted = family.convert(path, config, weights, dtype, device)
        weights.check_all_used()
        converted.num_frames = default_num_frames(config, given, declared)
    except CheckpointError as exc:
        hint = _defaulted_sizes(config)
        msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        raise type(exc)(f"{msg} ({hint})" if hint else msg) from exc
    return converted


_SIZE_FIELDS = {"text_config": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                "vocab_size"),
                "vision_config": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                  "image_size", "patch_size")}


def _defaulted_sizes(config: dict) -> str:
    """A note naming the size fields config.json leaves out (transformers then uses its defaults,
    e.g. a 4096-wide 32-layer text model), so a tensor mismatch points at the config."""
    absent = [f"{sub}.{k}" for sub, keys in _SIZE_FIELDS.items() if isinstance(config.get(sub), dict)
              for k in keys if k not in config[sub]]
    if not absent:
        return ""
    return f"config.json leaves {', '.join(absent)} unset, so transformers' defaults were used"
