"""HF text backbones (Llama, Mistral, Qwen2, Phi-3) -> HookedTransformerConfig + TransformerLens weights.

One table (``TEXT_BACKBONES``) says, per HF ``model_type``, which TransformerLens converter turns
the weights and which config fields differ from the Llama defaults. RoPE is written from
transformers' own RoPE functions into each block's ``rotary_sin`` / ``rotary_cos`` buffers, so
every rope variant transformers knows with a static table (default, linear, llama3, yarn) gives
the HF numbers; dynamic variants (dynamic NTK, LongRoPE's length switch) raise until ported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch
from transformer_lens import HookedTransformerConfig

from videolens.registry import Registry

from .checkpoint import CheckpointError, Weights

__all__ = ["TextBackbone", "TEXT_BACKBONES", "get_backbone", "hooked_config", "convert_text_weights", "rope_tables",
           "longrope_switch"]


def _llama_converter():
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    return convert_llama_weights


def _qwen2_converter():
    from transformer_lens.pretrained.weight_conversions import convert_qwen2_weights

    return convert_qwen2_weights


def _qwen3_converter():
    from transformer_lens.pretrained.weight_conversions.qwen3 import convert_qwen3_weights

    return convert_qwen3_weights


def _phi3_converter():
    from transformer_lens.pretrained.weight_conversions import convert_phi3_weights

    return convert_phi3_weights


def _mistral_converter():
    from transformer_lens.pretrained.weight_conversions import convert_mistral_weights

    return convert_mistral_weights


@dataclass(frozen=True)
class TextBackbone:
    """How one HF text model type maps onto TransformerLens.

    Attributes:
        architecture: TransformerLens ``original_architecture`` name.
        converter: returns TransformerLens' weight converter ``f(hf_like, cfg) -> state_dict``.
        config_overrides: HookedTransformerConfig fields that differ from the Llama defaults.
    """

    architecture: str
    converter: Callable[[], Callable]
    config_overrides: Dict = field(default_factory=dict)


TEXT_BACKBONES: Registry[TextBackbone] = Registry("text backbone", {
    "llama": TextBackbone("LlamaForCausalLM", _llama_converter),
    "mistral": TextBackbone("MistralForCausalLM", _mistral_converter),
    "qwen2": TextBackbone("Qwen2ForCausalLM", _qwen2_converter),
    "qwen3": TextBackbone("Qwen3ForCausalLM", _qwen3_converter, {"use_qk_norm": True}),
    "phi3": TextBackbone("Phi3ForCausalLM", _phi3_converter),
})


def get_backbone(model_type: str) -> TextBackbone:
    if model_type not in TEXT_BACKBONES:
        raise CheckpointError(
            f"text_config.model_type {model_type!r} is not a supported text backbone; supported: {sorted(TEXT_BACKBONES)}"
        )
    return TEXT_BACKBONES[model_type]


def hf_text_config(text_config: dict):
    """The transformers config object for a text-config dict (model_type defaults to llama)."""
    from transformers import AutoConfig

    d = dict(text_config)
    model_type = d.pop("model_type", "llama")
    get_backbone(model_type)  # one line naming the supported backbones, not transformers' list of every model
    rp = d.get("rope_scaling")
    if isinstance(rp, dict) and rp.get("type") == "su":  # Phi-3 legacy name for LongRoPE
        rp = dict(rp, type="longrope", rope_type="longrope")
        d["rope_scaling"] = rp
    try:
        return AutoConfig.for_model(model_type, **d)
    except (TypeError, ValueError) as exc:  # transformers' strict config validation
        raise CheckpointError(f"config.json text_config: {' '.join(str(exc).split())}") from exc


def _rope_theta(cfg) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    if "rope_theta" in params:
        return float(params["rope_theta"])
    return float(getattr(cfg, "rope_theta", 10000.0))


def hooked_config(
    text_config: dict, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> HookedTransformerConfig:
    """A HookedTransformerConfig equal in behaviour to the HF text model (TransformerLens 3.9, transformers 5).

    Raises:
        CheckpointError: the text model type is not supported.
    """
    hf = hf_text_config(text_config)
    spec = get_backbone(hf.model_type)
    n_heads = hf.num_attention_heads
    d_head = getattr(hf, "head_dim", None) or hf.hidden_size // n_heads
    n_kv = getattr(hf, "num_key_value_heads", None) or n_heads
    kw = dict(
        d_model=hf.hidden_size,
        d_head=d_head,
        n_heads=n_heads,
        d_mlp=hf.intermediate_size,
        n_layers=hf.num_hidden_layers,
        n_ctx=hf.max_position_embeddings,
        eps=hf.rms_norm_eps,
        d_vocab=hf.vocab_size,
        act_fn=hf.hidden_act,
        n_key_value_heads=n_kv if n_kv != n_heads else None,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_base=_rope_theta(hf),
        rotary_adjacent_pairs=False,
        final_rms=True,
        gated_mlp=True,
        original_architecture=spec.architecture,
        default_prepend_bos=False,
        tokenizer_prepends_bos=True,
        init_weights=False,
        dtype=dtype,
        device=str(device),
    )
    kw.update(spec.config_overrides)
    if spec.architecture == "Qwen2ForCausalLM" and kw["n_key_value_heads"] is None:
        kw["n_key_value_heads"] = n_heads  # TransformerLens' Qwen2 converter needs it even without grouping
    return HookedTransformerConfig(**kw)


def convert_text_weights(weights: Weights, prefix: str, text_config: dict, cfg: HookedTransformerConfig) -> Dict[str, torch.Tensor]:
    """TransformerLens state dict for the text model whose HF CausalLM tensors sit under ``prefix``
    (``model.*`` and ``lm_head.*`` below it). Uses TransformerLens' converter through an attribute
    view, so unused or missing tensors are accounted by ``weights``."""
    from transformers import AutoModelForCausalLM

    hf = hf_text_config(text_config)
    with torch.device("meta"):  # shapes only: a wrong one is named by its checkpoint key, not a TL name
        reference = AutoModelForCausalLM.from_config(hf)
    weights.check_shapes(reference, prefix, "config.json text_config")
    tree = weights.tree(prefix)
    if getattr(hf, "tie_word_embeddings", False) and f"{prefix}lm_head.weight" not in weights.tensors:
        weights.tensors[f"{prefix}lm_head.weight"] = weights.take(f"{prefix}model.embed_tokens.weight")
    convert = get_backbone(hf.model_type).converter()
    sd = convert(tree, cfg)
    return {k: v.to(cfg.dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in sd.items()}


def rope_tables(text_config: dict, n_positions: int, dtype: torch.dtype = torch.float32,
                long: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """sin and cos tables ``[n_positions, d_head]`` in TransformerLens' NeoX layout, from
    transformers' RoPE functions (attention scaling included), computed in fp32.

    For LongRoPE (Phi-3-128k; the legacy ``{"type": "su"}`` too) these are the short-factor tables,
    or the long-factor ones with ``long=True`` (``longrope_switch``).

    Raises:
        CheckpointError: a rope type whose table depends on the sequence length otherwise.
    """
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = hf_text_config(text_config)
    params = getattr(hf, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    d_head = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    if rope_type == "default":
        base = _rope_theta(hf)
        inv_freq = 1.0 / (base ** (torch.arange(0, d_head, 2, dtype=torch.float) / d_head))
        scale = 1.0
    elif rope_type in ("linear", "llama3", "yarn"):
        inv_freq, scale = ROPE_INIT_FUNCTIONS[rope_type](hf, "cpu")
    elif rope_type == "longrope":
        original = _original_max_positions(hf)
        inv_freq, scale = ROPE_INIT_FUNCTIONS["longrope"](hf, "cpu", seq_len=original + 1 if long else None)
    else:
        raise CheckpointError(f"rope type {rope_type!r} changes with sequence length and is not supported yet")
    pos = torch.arange(n_positions, dtype=torch.float)
    freqs = pos[:, None] * inv_freq.float()[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return (emb.sin() * scale).to(dtype), (emb.cos() * scale).to(dtype)


def _original_max_positions(hf) -> int:
    params = getattr(hf, "rope_parameters", None) or {}
    return int(params.get("original_max_position_embeddings") or getattr(hf, "original_max_position_embeddings", None)
               or hf.max_position_embeddings)


def longrope_switch(text_config: dict, n_positions: int, dtype: torch.dtype = torch.float32
                    ) -> Optional[Tuple[int, Tuple[torch.Tensor, torch.Tensor]]]:
    """For LongRoPE: ``(threshold, (sin, cos) long-factor tables)``. A forward whose largest
    position id + 1 exceeds ``threshold`` (``original_max_position_embeddings``, 4096 for
    Phi-3-mini-128k) uses the long factors at EVERY position, as transformers' and the official
    Phi-3 code do (Mini-InternVL's released code); shorter ones the short factors. None for other rope types."""
    hf = hf_text_config(text_config)
    params = getattr(hf, "rope_parameters", None) or {}
    if params.get("rope_type") != "longrope":
        return None
    return _original_max_positions(hf), rope_tables(text_config, n_positions, dtype, long=True)
