"""The tiny VideoLLM being trained: CLIP tower, projector, 3-D pooling, Llama (PLLaVA layout)."""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import rearrange

from videolens import synthetic
from videolens.frontend.vision import CLIP_MEAN, CLIP_STD, AdaptivePool3d, Projector
from .config import TrainConfig

# ---- model ------------------------------------------------------------------------------------
def build_tokenizer():
    """Word-level tokenizer over every synthetic question/option text plus ``Answer``."""
    from videolens.prompting.tokenizers import build_word_level_tokenizer

    return build_word_level_tokenizer(synthetic.vocabulary_texts(), extra_words=["Answer", "Yes", "No"])


class TinyVideoLLM(torch.nn.Module):
    """tower -> hidden_states[-2][:, 1:] -> projector -> 3-D pool -> Llama, batched for training."""

    def __init__(self, cfg: TrainConfig, vocab_size: int):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

        vc = CLIPVisionConfig(hidden_size=cfg.vision_width, intermediate_size=2 * cfg.vision_width,
                              num_hidden_layers=cfg.vision_layers, num_attention_heads=4,
                              image_size=cfg.image_size, patch_size=cfg.patch_size, projection_dim=cfg.vision_width)
        tc = LlamaConfig(hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp, num_hidden_layers=cfg.n_layers,
                         num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads, vocab_size=vocab_size,
                         max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=False)
        tc._attn_implementation = "sdpa"
        self.tower = CLIPVisionModel(vc)
        self.projector = Projector(cfg.vision_width, cfg.d_model, "gelu")
        self.pool = AdaptivePool3d(cfg.pooling_shape)
        self.llama = LlamaForCausalLM(tc)
        if cfg.proj_out_std > 0:
            with torch.no_grad():
                self.projector.linear_2.weight.normal_(0.0, cfg.proj_out_std)
                self.projector.linear_2.bias.zero_()
        with torch.no_grad():  # tower near identity at start (docs/tiny_model.md)
            for layer in self.tower.encoder.layers:
                layer.self_attn.out_proj.weight.zero_()
                layer.mlp.fc2.weight.zero_()
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` -> normalised ``[N, 3, H, W]`` (equal to FramePreprocessor at 32 px)."""
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def video_embeds(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``[B, T, H, W, 3]`` -> video tokens ``[B, T'*h*w, d_model]`` (frame, row, col order)."""
        B, T = frames.shape[:2]
        px = self.pixels(frames.reshape(B * T, *frames.shape[2:]))
        hs = self.tower(pixel_values=px, output_hidden_states=True).hidden_states[-2][:, 1:]
        side = int(math.isqrt(hs.shape[1]))
        grid = self.projector(rearrange(hs, "(b t) (r c) d -> b t r c d", b=B, r=side))
        pooled = self.pool.pool(rearrange(grid, "b t r c d -> b d t r c"))
        return rearrange(pooled, "b d t r c -> b (t r c) d")

    def hidden(self, tokens: torch.Tensor, video_pos: torch.Tensor, frames: np.ndarray, mask: torch.Tensor,
               resid_after: int = 0):
        """Final hidden states ``[B, S, d]`` with video tokens spliced at ``video_pos``; with
        ``resid_after`` = L > 0 also the residual stream after L blocks ``[B, S, d]`` (a pair)."""
        emb = self.llama.model.embed_tokens(tokens)
        emb = emb.clone()
        self.last_video = self.video_embeds(frames)
        emb[:, video_pos] = self.last_video.to(emb.dtype)
        out = self.llama.model(inputs_embeds=emb, attention_mask=mask, output_hidden_states=resid_after > 0)
        if resid_after <= 0:
            return out.last_hidden_state
        return out.last_hidden_state, out.hidden_states[resid_after]


def build_model(cfg: TrainConfig, vocab_size: int) -> TinyVideoLLM:
    torch.manual_seed(cfg.seed)
    return TinyVideoLLM(cfg, vocab_size)


