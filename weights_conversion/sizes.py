"""Sanity of config.json's sizes against the checkpoint's own tensors, checked before any module is
built (``weights_conversion.registry.convert_checkpoint`` calls it first)."""

from __future__ import annotations

import re

from .checkpoint import CheckpointError, Weights

__all__ = ["check_sizes_against_weights", "MAX_POSITIONS"]

_WIDTHS = ("hidden_size", "intermediate_size", "vocab_size", "n_embd", "d_model")
_DEPTHS = ("num_hidden_layers", "depth", "n_layer")
MAX_POSITIONS = 1 << 22
"""Largest ``max_position_embeddings`` accepted (4M positions, above every released context):
the rotary tables are built for all of them before any weight is read."""


def check_sizes_against_weights(config: dict, weights: Weights, where: str) -> None:
    """Refuse config.json sizes the checkpoint's tensors cannot have, before any module is built (an
    absurd ``num_hidden_layers`` would otherwise build for minutes, an absurd width or context
    allocate gigabytes): every width field (``hidden_size``, ``intermediate_size``, ``vocab_size``)
    at most the largest tensor dimension, every depth field at most the number of layers the
    weights hold, ``max_position_embeddings`` at most ``MAX_POSITIONS``, and ``num_attention_heads``
    dividing ``hidden_size`` (as transformers' configs require).

    Raises:
        CheckpointError: naming the field, its value and what the weights hold.
    """
    shapes = [tuple(t.shape) for t in weights.tensors.values()]
    widest = max((max(s) for s in shapes if s), default=0)
    layer_ids = {int(m.group(1)) for k in weights.tensors for m in re.finditer(r"\.(?:layers?|blocks|h)\.(\d+)\.", k)}
    depth = max(layer_ids) + 1 if layer_ids else 0

    def walk(node, name):
        heads, width = node.get("num_attention_heads"), node.get("hidden_size")
        if isinstance(heads, int) and isinstance(width, int) and heads > 0 and width % heads:
            raise CheckpointError(f"{where}: config.json {name}num_attention_heads={heads} does not divide "
                                  f"{name}hidden_size={width}")
        for k, v in node.items():
            field = f"{name}{k}"
            if isinstance(v, dict):
                walk(v, field + ".")
            elif not isinstance(v, int) or isinstance(v, bool):
                continue
            elif k in _WIDTHS and v > widest:
                raise CheckpointError(f"{where}: config.json {field}={v} is larger than every tensor of the checkpoint "
                                      f"(its largest dimension is {widest})")
            elif k in _DEPTHS and v > max(depth, 1):
                raise CheckpointError(f"{where}: config.json {field}={v}, but the weights hold {depth} layer(s)")
            elif k == "max_position_embeddings" and v > MAX_POSITIONS:
                raise CheckpointError(f"{where}: config.json {field}={v} is above {MAX_POSITIONS} positions (no released "
                                      f"model has that context; its rotary tables alone would not fit in memory)")

    walk(config, "")
