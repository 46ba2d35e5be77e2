"""The transformer block without TransformerLens' redundant passes: the attention input normalised
once, not three times, and the gated MLP's product and bias in one operation.

TransformerLens' ``TransformerBlock.forward`` (3.9) calls ``ln1`` on the query, key and value
inputs separately, even when the three are the same residual stream (every model here), and adds
a scalar ``0.0`` to two of the results: three norms and two copies of the residual a layer where
one norm does (about 5% of a CPU forward at width 256; a dozen extra kernel launches a layer on a
GPU, which the knockout engines' layer-by-layer batches pay in every step).

``OneNormBlock.forward`` computes ``ln1`` once and hands the same tensor to the attention as
query, key and value input. It runs only where that is TransformerLens' computation exactly:

- the standard pre-norm block (no ``use_attn_in`` / ``use_split_qkv_input``, no post-norm, no
  parallel attention and MLP, not attention-only) without a shortformer position embedding;
- ``ln1`` has no hook at all: a hook on ``ln1.hook_scale`` / ``ln1.hook_normalized`` (a cache of
  every activation included), or a torch hook on the ``ln1`` module itself, runs TransformerLens' own
  forward, so it fires three times as there.

Everything else (every other hook point, its order, the key-value cache, the attention mask) is
TransformerLens' forward line by line; outputs are bitwise equal (tests/test_fast_blocks.py).

``AddcmulGatedMLP.forward`` is ``GatedMLP.forward`` with ``act(pre) * pre_linear + b_in`` computed
by one ``torch.addcmul`` instead of a product and then a sum over the ``[batch, pos, d_mlp]``
hidden units (the sum alone was about 5% of a CPU forward at width 256, for a ``b_in`` that is zero
in every family here: their MLPs have no bias). With ``b_in`` zero the two are bitwise equal; with
a non-zero ``b_in`` (an edited bias) addcmul may round the sum once where TransformerLens rounds
twice (at most one unit in the last place). ``hook_pre``, ``hook_pre_linear`` and ``hook_post``
fire with the same values.

``install_fast_blocks(model, False)`` gives a model TransformerLens' own classes back (to rule these
out when a result looks odd), ``install_fast_blocks(model)`` these again; ``HookedVideoLLM`` installs
them when it is built.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from transformer_lens.components import GatedMLP, TransformerBlock
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

from .._tl_compat import swap_class

__all__ = ["OneNormBlock", "AddcmulGatedMLP", "install_fast_blocks", "one_norm_supported"]


def one_norm_supported(cfg) -> bool:
    """Whether ``OneNormBlock`` covers this configuration (else TransformerLens' forward always runs)."""
    return not (cfg.use_attn_in or cfg.use_split_qkv_input or cfg.attn_only or cfg.parallel_attn_mlp
                or cfg.original_architecture in POST_NORM_ARCHITECTURES)


def _hooked(module: torch.nn.Module) -> bool:
    """Whether ``module`` or any module inside it (its hook points) carries a torch hook (forward,
    pre-forward, backward)."""
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or getattr(m, "_backward_pre_hooks", None)
               for m in module.modules())


class OneNormBlock(TransformerBlock):
    """``TransformerBlock`` whose ``ln1`` runs once a forward where TransformerLens runs it three
    times on the same input (module doc); ``last_path`` says which forward ran (``"one_norm"`` or
    ``"plain"``)."""

    last_path: Optional[str] = None

    def forward(
        self,
        resid_pre: Float[torch.Tensor, "batch pos d_model"],
        shortformer_pos_embed: Optional[Float[torch.Tensor, "batch pos d_model"]] = None,
        past_kv_cache_entry=None,
        attention_mask: Optional[Int[torch.Tensor, "batch offset_pos"]] = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        if shortformer_pos_embed is not None or not one_norm_supported(self.cfg) or _hooked(self.ln1):
            self.last_path = "plain"
            return super().forward(resid_pre, shortformer_pos_embed, past_kv_cache_entry, attention_mask)
        self.last_path = "one_norm"
        resid_pre = self.hook_resid_pre(resid_pre)  # [batch, pos, d_model]
        normed = self.ln1(resid_pre)
        attn_out = self.attn(query_input=normed, key_input=normed, value_input=normed,
                             past_kv_cache_entry=past_kv_cache_entry, attention_mask=attention_mask)
        if self.cfg.use_normalization_before_and_after:
            attn_out = self.ln1_post(attn_out)
        attn_out = self.hook_attn_out(attn_out)
        if resid_pre.device != attn_out.device:
            resid_pre = resid_pre.to(attn_out.device)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)  # [batch, pos, d_model]
        mlp_in = resid_mid if not self.cfg.use_hook_mlp_in else self.hook_mlp_in(resid_mid.clone())
        mlp_out = self.apply_mlp(self.ln2(mlp_in))
        return self.hook_resid_post(resid_mid + mlp_out)  # [batch, pos, d_model]


class AddcmulGatedMLP(GatedMLP):
    """``GatedMLP`` whose ``act(pre) * pre_linear + b_in`` is one ``torch.addcmul`` (module doc);
    TransformerLens' forward for layer-norm activations (SoLU)."""

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        if self.cfg.is_layer_norm_activation():
            return super().forward(x)
        if self.W_gate.device != x.device:
            x = x.to(self.W_gate.device)
        pre_act = self.hook_pre(F.linear(x, self.W_gate.T.contiguous()))  # [batch, pos, d_mlp]
        pre_linear = self.hook_pre_linear(F.linear(x, self.W_in.T.contiguous()))  # [batch, pos, d_mlp]
        post_act = self.hook_post(torch.addcmul(self.b_in, self.act_fn(pre_act), pre_linear))  # [batch, pos, d_mlp]
        return F.linear(post_act, self.W_out.T.contiguous(), self.b_out)


def install_fast_blocks(model: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """Give every ``blocks.{l}`` of a HookedTransformer ``OneNormBlock``'s forward and every gated MLP
    ``AddcmulGatedMLP``'s (``enabled=False``: TransformerLens' ``TransformerBlock`` and ``GatedMLP``
    back). In place: only classes change; parameters, hooks, names and the state dict stay.
    Returns ``model``.

    Raises:
        TypeError: a block that is neither TransformerLens' ``TransformerBlock`` nor ``OneNormBlock``.
    """
    for block in model.blocks:
        if type(block) not in (TransformerBlock, OneNormBlock):
            raise TypeError(f"install_fast_blocks: {type(block).__name__} is not TransformerLens' TransformerBlock")
        swap_class(block, OneNormBlock if enabled else TransformerBlock)
        if type(getattr(block, "mlp", None)) in (GatedMLP, AddcmulGatedMLP):
            swap_class(block.mlp, AddcmulGatedMLP if enabled else GatedMLP)
    return model
