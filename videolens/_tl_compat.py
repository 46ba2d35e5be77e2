"""Every TransformerLens internal videolens relies on, in one place, checked against the installed
version at import.

videolens subclasses ``HookedTransformer`` and reaches past its public API in a few places: the
SDPA attention path re-runs ``AbstractAttention.forward``'s steps (q/k/v, rotary, ``hook_z``,
``W_O``), the knockout engine fills a frozen key-value cache and unembeds one position, the model
writes RoPE tables into each block's ``rotary_sin`` / ``rotary_cos`` buffers. Those reads are the
functions below, written against TransformerLens 3.9; ``tests/test_tl_compat.py`` checks each
against TransformerLens' own forward, so an upgrade that changes them fails there, not silently.
One more re-implementation lives beside the module it serves: ``videolens.hooked.block`` repeats
``TransformerBlock.forward``'s pre-norm path (ln1 once), checked bitwise against TransformerLens' in
``tests/test_fast_blocks.py``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
from typing import List, Optional, Sequence, Tuple

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from transformer_lens import ActivationCache, HookedTransformer, HookedTransformerConfig
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.components import Embed
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name
from transformer_lens.utilities.activation_functions import apply_softcap

__all__ = [
    "ActivationCache", "HookedTransformer", "HookedTransformerConfig", "Embed", "HookPoint", "get_act_name",
    "SUPPORTED", "check_version", "tl_version", "qkv_rotated", "shares_past", "qkv_shared_past", "attn_scale",
    "project_z", "cache_keys", "frozen_kv_cache",
    "new_kv_cache", "final_logits", "set_rotary_tables", "rotary_tables", "swap_class", "is_caching_hook",
    "scoped_hooks",
]

SUPPORTED = ((3, 9), (4, 0))
"""TransformerLens versions these internals are written for: ``>= 3.9, < 4`` (4.x removed
``HookedTransformer``)."""


def check_version(version: str) -> None:
    """Raise ImportError unless ``version`` lies in ``SUPPORTED`` (one line naming both)."""
    m = re.match(r"(\d+)\.(\d+)", version)
    v = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if not SUPPORTED[0] <= v < SUPPORTED[1]:
        raise ImportError(f"videolens needs transformer_lens >= 3.9, < 4 (HookedTransformer); found {version}: "
                          "pip install 'transformer_lens>=3.9,<4'")


def tl_version() -> str:
    return importlib.metadata.version("transformer_lens")


check_version(tl_version())


# ---- attention (AbstractAttention.forward, TransformerLens 3.9) --------------------------------
def qkv_rotated(attn, query_input, key_input, value_input, past_kv_cache_entry, attention_mask
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """q, k, v ``[batch, pos, head, d_head]`` as ``AbstractAttention.forward`` computes them
    (hooks ``hook_q/k/v``, the key-value cache appended, ``hook_rot_q/k`` after rotary), and the
    query offset (cached positions)."""
    entry = past_kv_cache_entry
    if shares_past(attn, entry, attention_mask):
        # a frozen past shared by every batch row (the knockout engines'): rotate its keys once, not
        # once a row, and the new keys from their own offset; the same values TransformerLens'
        # rotation of the whole joined key set gives (rotary is elementwise per position)
        q, past_k, k, past_v, v, offset = qkv_shared_past(attn, query_input, key_input, value_input, entry)
        B = k.shape[0]
        k = attn.hook_rot_k(torch.cat([past_k.expand(B, -1, -1, -1), k], dim=1))
        v = torch.cat([past_v.expand(B, -1, -1, -1), v], dim=1)
        return q, k, v, offset
    q, k, v = attn.calculate_qkv_matrices(query_input, key_input, value_input)
    rotary = attn.cfg.positional_embedding_type == "rotary"
    if entry is not None:
        offset = entry.past_keys.size(1)
        k, v = entry.append(k, v)
    else:
        offset = 0
    if rotary:
        q = attn.hook_rot_q(attn.apply_rotary(q, offset, attention_mask))
        k = attn.hook_rot_k(attn.apply_rotary(k, 0, attention_mask))  # cached keys are pre-rotary
    return q, k, v, offset


def shares_past(attn, entry, attention_mask) -> bool:
    """Whether this attention call reads a frozen past shared by every batch row on a rotary model
    without a padding mask: ``qkv_shared_past`` applies (``_shared_past``)."""
    return (entry is not None and attn.cfg.positional_embedding_type == "rotary" and attention_mask is None
            and _shared_past(attn, entry))


def qkv_shared_past(attn, query_input, key_input, value_input, entry) -> Tuple[
        Float[torch.Tensor, "batch pos head d_head"], Float[torch.Tensor, "1 past kv_head d_head"],
        Float[torch.Tensor, "batch pos kv_head d_head"], Float[torch.Tensor, "1 past kv_head d_head"],
        Float[torch.Tensor, "batch pos kv_head d_head"], int]:
    """``qkv_rotated``'s pieces where ``shares_past`` holds, not yet joined: the rotated queries
    (``hook_q``, ``hook_rot_q`` fired), the shared past's keys rotated once and its values (one row),
    the new rows' keys rotated from their offset and values (``hook_k``, ``hook_v`` fired), and the
    offset. ``hook_rot_k`` has not fired: it takes the joined keys (``qkv_rotated``)."""
    q, k, v = attn.calculate_qkv_matrices(query_input, key_input, value_input)
    offset = entry.past_keys.size(1)
    past_k = attn.apply_rotary(entry.past_keys[:1], 0, None)
    return (attn.hook_rot_q(attn.apply_rotary(q, offset, None)), past_k, attn.apply_rotary(k, offset, None),
            entry.past_values[:1], v, offset)


def _shared_past(attn, entry) -> bool:
    """A frozen key-value cache entry whose rows are one row broadcast (``frozen_kv_cache``), on a
    model whose rotary angles do not depend on the sequence length (no dynamic NTK scaling)."""
    keys = entry.past_keys
    return (bool(entry.frozen) and keys.shape[1] > 0 and (keys.shape[0] == 1 or keys.stride(0) == 0)
            and not getattr(attn.cfg, "use_dynamic_ntk_rope", False))


def attn_scale(attn) -> float:
    """The divisor of the attention scores (``sqrt(d_head)`` unless the config says otherwise)."""
    return float(attn.attn_scale)


def project_z(attn, z: Float[torch.Tensor, "batch pos head d_head"]) -> Float[torch.Tensor, "batch pos d_model"]:
    """``hook_z`` then the output projection ``W_O``, ``b_O``, as ``AbstractAttention.forward``."""
    z = attn.hook_z(z)
    B, Q = z.shape[:2]
    w = einops.rearrange(attn.W_O, "head_index d_head d_model -> d_model (head_index d_head)").contiguous()
    b_O = attn.b_O
    if w.device != z.device:
        w, b_O = w.to(z.device), b_O.to(z.device)
    if z.dtype != w.dtype:
        z = z.to(w.dtype)
    z = z.reshape(B, Q, attn.cfg.d_head * attn.cfg.n_heads)
    if z.device.type == "mps":
        return torch.matmul(z, w.T) + b_O
    return F.linear(z, w, b_O)


def is_caching_hook(fn) -> bool:
    """Whether a forward hook registered by ``HookPoint.add_hook`` wraps ``run_with_cache``'s
    ``save_hook`` (TL keeps the user's function in the wrapper's closure as ``hook``)."""
    cells = dict(zip(getattr(getattr(fn, "__code__", None), "co_freevars", ()),
                     (c.cell_contents for c in (getattr(fn, "__closure__", None) or ()))))
    hook = cells.get("hook")
    return getattr(getattr(hook, "func", None), "__name__", "") == "save_hook"


def swap_class(module: torch.nn.Module, cls: type) -> None:
    """Give ``module`` the class ``cls`` (a subclass of its own; parameters and hooks untouched)."""
    if not (issubclass(cls, type(module)) or issubclass(type(module), cls)):
        raise TypeError(f"{cls.__name__} is not a subclass of {type(module).__name__}")
    module.__class__ = cls


# ---- temporary hooks (HookedRootModule.hooks, TransformerLens 3.9) --------------------------------
@contextlib.contextmanager
def scoped_hooks(model, fwd_hooks: Sequence[Tuple[str, object]]):
    """``model.hooks(fwd_hooks=...)`` for hook points named by string, undone on those points only.

    TransformerLens' context adds each hook at a new context level and, on exit, removes that
    level's hooks from every hook point of the model (about 17 a layer): at 7B that walk costs
    milliseconds, and the knockout engines enter a context once per layer of every batch. This one
    adds the hooks the same way (``HookPoint.add_hook`` at ``context_level + 1``) and removes that
    level's hooks from the points it touched; the same hooks run, and none is left behind.

    Raises:
        KeyError: a name that is not a module of the model.
    """
    model.context_level += 1
    level, points = model.context_level, []
    try:
        for name, hook in fwd_hooks:
            hp = model.mod_dict[name]
            hp.add_hook(hook, dir="fwd", level=level)
            points.append(hp)
        yield model
    finally:
        for hp in points:
            hp.remove_hooks("fwd", including_permanent=False, level=level)
        model.context_level -= 1


# ---- key-value caches and the model's tail -----------------------------------------------------
def new_kv_cache(cfg, device, batch: int = 1) -> TransformerLensKeyValueCache:
    """An empty TransformerLens key-value cache for generation."""
    return TransformerLensKeyValueCache.init_cache(cfg, device, batch)


def cache_keys(attn, k: torch.Tensor) -> torch.Tensor:
    """Keys as TransformerLens' key-value cache holds them, from ``hook_k``'s values: models with
    ``use_qk_norm`` (Qwen3) normalise keys inside ``calculate_qkv_matrices``, after ``hook_k``."""
    if getattr(attn.cfg, "use_qk_norm", False):
        return attn._apply_qk_norm(k, attn.k_norm)
    return k


def frozen_kv_cache(keys: Sequence[Optional[torch.Tensor]], values: Sequence[Optional[torch.Tensor]],
                    n_cached: int, device, batch: int = 1) -> TransformerLensKeyValueCache:
    """A frozen cache holding, per layer, pre-rotary keys / values ``[1, n_cached, kv_heads, d_head]``
    (None for layers that are not run), shared by ``batch`` rows (expanded, not copied)."""
    entries: List[Optional[TransformerLensKeyValueCacheEntry]] = [
        None if k is None else TransformerLensKeyValueCacheEntry(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1),
                                                                 frozen=True)
        for k, v in zip(keys, values)]
    seen = torch.ones(batch, n_cached, dtype=torch.int, device=device)
    return TransformerLensKeyValueCache(entries, seen, frozen=True)


def final_logits(model, resid: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
    """``HookedTransformer.forward``'s tail: final norm, unembedding, logit soft-cap."""
    x = resid
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    return apply_softcap(model.unembed(x), model.cfg.output_logits_soft_cap)


def set_rotary_tables(attn, sin: torch.Tensor, cos: torch.Tensor) -> None:
    """Write RoPE tables ``[n_ctx, d_head]`` (NeoX layout) into an attention module's buffers, which
    TransformerLens reads instead of computing plain RoPE."""
    dev = attn.rotary_sin.device  # a model built on the meta device takes the tables where they are
    attn.rotary_sin = sin if dev.type == "meta" else sin.to(dev)
    attn.rotary_cos = cos if dev.type == "meta" else cos.to(dev)


def rotary_tables(attn) -> Tuple[torch.Tensor, torch.Tensor]:
    """An attention module's RoPE tables ``(sin, cos)`` ``[n_ctx, d_head]``, as TransformerLens reads
    them (``rotary_sin[offset:offset + pos]`` when no padding mask is given)."""
    return attn.rotary_sin, attn.rotary_cos
