"""The paper's models at their real size on one GPU: the paper's full knockout sweep three ways,
side by side in one run (issue 29).

The model is built directly on the device in bf16 with random weights in the released
configuration's shape (``SHAPES``, data below: layers, widths, heads, KV heads, MLP width,
vocabulary, RoPE, vision tower), nothing read from disk but config.json and the tokenizer written
beside it (``HookedVideoLLM.from_pretrained(folder, state_dict=...)``), nothing downloaded. One
real video (``../shared/data/videos`` when present, else a synthetic clip in memory) is prepared
with the checkpoint's known settings (``videolens.sources.hub.MODELS``: PLLaVA's 8x12x12 pooling,
VideoLLaMA3's 1152-token budget, Mini-InternVL's 8x16x16 tokens; Qwen2.5-VL at pixel bounds of at most
288 merged tokens a temporal slot, about 1152 for 8 frames, its peers given the 3-D M-RoPE ids).
The paper's four targets, every
centre layer, window 9:

(a) videolens: ``knockout.sweep(batch_conditions="auto")``: the batch chosen from the free
    memory, an out-of-memory halves it and retries;
(b) the careful transformers user: the family's transformers text model with
    ``attn_implementation="sdpa"``, the video features computed once, B conditions per forward with
    per-row float 4-D masks ``[B, 1, S, S]`` on the window's layers (``logits_to_keep`` 1; the
    largest B of ``--peer-batch`` that fits, halved on out-of-memory);
(c) the paper's method: transformers eager, one condition at a time, the vision tower rerun per
    condition, on every ``--paper-every``-th condition, its time scaled to all.

Per method: seconds per sample, peak device memory, the largest option-probability difference
from (a), the work it does (rows x layers, and FLOP from the config), achieved TFLOP/s. The
physical limit is measured in the same run: the bf16 GEMM rate this device reaches on a large
matmul, and the time (a)'s work would take at it. Before the sweep, the plain forward: videolens'
hooked forward without hooks against the transformers text model with SDPA on the same
embeddings, both unembedding every position (``forward_times``, interleaved repetitions). Last
lines: (b)/(a), (a) over that limit, and that forward ratio.

    python benchmarks/paper_scale.py --family pllava-7b --device cuda [--paper-every 16] [--json OUT.json]
    python benchmarks/paper_scale.py --family pllava-7b --tiny        # the same script at toy size (CPU)

``--tiny`` shrinks every width and depth (4 layers, width 64, window 3) but keeps the token layout,
so the script's every path runs on a CPU in about a minute (``tests/test_benchmarks.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED = Path(os.environ.get("VIDEOLENS_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
"""../shared (its LLaMA tokenizer and a real clip), or where ``VIDEOLENS_SHARED`` points (the GPU
machine gets a copy of those two files: benchmarks/gpu_wheels.sh)."""
TARGET_NAMES = ("cross-frame", "vql-to-ql", "question-and-options-to-last", "vq-to-true-opt")
SAMPLE = dict(question="Which direction does the bird turn its head in the video?",
              candidates=["To the left.", "To the right.", "It does not move.", "Up and down."], answer="To the left.")


@dataclass(frozen=True)
class Shape:
    """A released checkpoint's shape: its text model and vision tower, as their configs give them."""

    family: str  # the writer below
    hub_id: str  # its row of videolens.sources.hub.MODELS (settings: pooling, budget, template, frames)
    text: dict  # transformers text config fields
    vision: dict  # vision tower config fields
    extra: dict = field(default_factory=dict)


LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
                rope_theta=10000.0, tie_word_embeddings=False)
CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768)
QWEN2_5_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
                  rope_theta=1e6, tie_word_embeddings=False)

SHAPES: Dict[str, Shape] = {
    # LLaVA-NeXT-7B-Video-FT: Vicuna-7B v1.5 (llava-hf's vocabulary padded to 32064) + CLIP-L/336
    "pllava-7b": Shape("pllava", "byminji/LLaVA-NeXT-7B-Video-FT", LLAMA_7B, CLIP_L_336),
    # LLaVA-NeXT-13B-Video-FT: Vicuna-13B v1.5 + CLIP-L/336
    "pllava-13b": Shape("pllava", "byminji/LLaVA-NeXT-13B-Video-FT",
                        {**LLAMA_7B, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                         "num_attention_heads": 40, "num_key_value_heads": 40}, CLIP_L_336),
    # Mini-InternVL-4B-Video-FT: Phi-3-mini-128k (LongRoPE, original 4096) + InternViT-300M-448px
    "internvl-4b": Shape("internvl", "byminji/Mini-InternVL-4B-Video-FT",
                         dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
                              num_key_value_heads=32, vocab_size=32064, max_position_embeddings=131072,
                              original_max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                              tie_word_embeddings=False),
                         dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=448, patch_size=14)),
    # VideoLLaMA3-7B: Qwen2.5-7B + SigLIP-NaViT (27 layers, 1152 wide), 1152 video tokens
    "videollama3-7b": Shape("videollama3", "DAMO-NLP-SG/VideoLLaMA3-7B", QWEN2_5_7B,
                            dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                 num_attention_heads=16, patch_size=14)),
    # Qwen2.5-VL-7B-Instruct: Qwen2.5-7B with M-RoPE sections [16, 24, 24] + its windowed ViT (32 blocks, 1280
    # wide); pixel bounds giving at most 288 merged tokens a temporal slot, so 8 frames (4 slots) give about the
    # 1152 video tokens of the paper's other 7B models
    "qwen2_5_vl-7b": Shape("qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct",
                           {**QWEN2_5_7B, "max_position_embeddings": 128000, "mrope_section": [16, 24, 24]},
                           dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                                spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                                fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu"),
                           extra=dict(max_pixels=288 * 28 * 28, min_pixels=4 * 28 * 28)),
}


def tiny(shape: Shape) -> Shape:
    """The same shape at toy size (4 layers, width 64) with the same token layout and vocabulary."""
    t = dict(shape.text)
    groups = t["num_attention_heads"] // t["num_key_value_heads"]
    t.update(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=max(1, 4 // groups))
    v = dict(shape.vision)
    if "depth" in v:  # Qwen2.5-VL's ViT: its own field names; one windowed and one full-attention block
        v.update(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, fullatt_block_indexes=[1])
    else:
        v.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    if "mrope_section" in t:  # head_dim 16: 8 frequencies, split about as the released 16:24:24
        t["mrope_section"] = [2, 3, 3]
    return replace(shape, text=t, vision=v)


# ---- building a model of a shape on the device ------------------------------------------------------
@contextlib.contextmanager
def default_dtype(dtype):
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def llama_tokenizer():
    """(tokenizer, placeholder id): the real LLaMA vocabulary with llava-hf's ``<image>`` (32000)
    when ../shared has it, else the tests' word-level tokenizer."""
    from transformers import AddedToken, AutoTokenizer

    from videolens.testing import PLACEHOLDER, tiny_tokenizer

    if (SHARED / "tokenizers" / "llama" / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(SHARED / "tokenizers" / "llama"))
        tok.add_tokens([AddedToken("<image>", special=True, normalized=False),
                        AddedToken("<pad>", special=True, normalized=False)], special_tokens=True)
        return tok, tok.convert_tokens_to_ids("<image>")
    return tiny_tokenizer(), PLACEHOLDER


@dataclass
class Built:
    """A family built on the device: the folder (config and tokenizer only), its tensors under the
    on-disk names, the transformers text model and head the peers run, and the options to load."""

    folder: Path
    tensors: Dict[str, torch.Tensor]
    text_model: torch.nn.Module  # a transformers *Model (embed_tokens, layers, norm)
    head: torch.nn.Module  # lm_head
    options: dict


def build_pllava(shape: Shape, folder: Path, known) -> Built:
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from videolens.frontend.vision import Projector
    from weights_conversion.writers import pllava_tensors, save_pllava_checkpoint

    tok, placeholder = llama_tokenizer()
    tower = CLIPVisionModel(CLIPVisionConfig(**shape.vision)).eval()
    llm = LlamaForCausalLM(LlamaConfig(**shape.text)).eval()
    proj = Projector(shape.vision["hidden_size"], shape.text["hidden_size"], "gelu")
    pooling = known.options["pooling_shape"]
    save_pllava_checkpoint(folder, tower, proj, llm, tok, pooling, placeholder, num_frames=known.num_frames,
                           weights=False)
    return Built(folder, pllava_tensors(tower, proj, llm), llm.model, llm.lm_head, dict(known.options))


def build_internvl(shape: Shape, folder: Path, known) -> Built:
    from transformers import AutoModelForCausalLM, InternVLVisionConfig, InternVLVisionModel

    from videolens.testing import PLACEHOLDER, tiny_tokenizer
    from weights_conversion.text_backbones import hf_text_config
    from weights_conversion.writers import internvl_tensors, save_internvl_checkpoint

    tok = tiny_tokenizer(placeholder="<IMG_CONTEXT>")
    t = shape.text
    half = t["hidden_size"] // t["num_attention_heads"] // 2
    llm_config = dict(t, model_type="phi3", architectures=["Phi3ForCausalLM"], hidden_act="silu", sliding_window=None,
                      pad_token_id=0, rope_scaling={"type": "su", "short_factor": [1.0 + 0.01 * i for i in range(half)],
                                                    "long_factor": [1.0 + 0.5 * i for i in range(half)]})
    lm = AutoModelForCausalLM.from_config(hf_text_config(llm_config)).eval()
    d = shape.vision["hidden_size"]
    tower = InternVLVisionModel(InternVLVisionConfig(**shape.vision, attention_bias=True, use_mean_pooling=True)).eval()
    mlp1 = torch.nn.Sequential(torch.nn.LayerNorm(4 * d), torch.nn.Linear(4 * d, t["hidden_size"]), torch.nn.GELU(),
                               torch.nn.Linear(t["hidden_size"], t["hidden_size"]))
    save_internvl_checkpoint(folder, tower, mlp1, lm, tok, llm_config, PLACEHOLDER, num_frames=known.num_frames,
                             weights=False)
    return Built(folder, internvl_tensors(tower, mlp1, lm), lm.model, lm.lm_head, dict(known.options))


def build_videollama3(shape: Shape, folder: Path, known) -> Built:
    from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration, VideoLlama3VisionConfig

    from videolens.testing import PLACEHOLDER, tiny_tokenizer
    from weights_conversion.writers import save_videollama3_checkpoint, videollama3_tensors

    tok = tiny_tokenizer()
    text = {**shape.text, "model_type": "qwen2", "rope_parameters": {"rope_type": "default",
                                                                     "rope_theta": shape.text["rope_theta"]}}
    cfg = VideoLlama3Config(text_config=text, vision_config=VideoLlama3VisionConfig(**shape.vision),
                            video_token_id=PLACEHOLDER, image_token_id=PLACEHOLDER - 1)
    model = VideoLlama3ForConditionalGeneration(cfg).eval()
    save_videollama3_checkpoint(folder, model, tok, "original", weights=False)
    return Built(folder, videollama3_tensors(model), model.model.language_model, model.lm_head, dict(known.options))


def build_qwen2_5_vl(shape: Shape, folder: Path, known) -> Built:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from videolens.testing import PLACEHOLDER, tiny_tokenizer

    tok = tiny_tokenizer()
    t = {k: v for k, v in shape.text.items() if k not in ("mrope_section", "rope_theta")}
    text = dict(t, model_type="qwen2_5_vl_text", rope_parameters={"rope_type": "default", "rope_theta": shape.text["rope_theta"],
                                                                  "mrope_section": shape.text["mrope_section"]})
    vision = dict(shape.vision, out_hidden_size=shape.text["hidden_size"])
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, video_token_id=PLACEHOLDER,
                           image_token_id=PLACEHOLDER - 1, vision_start_token_id=PLACEHOLDER - 2,
                           vision_end_token_id=PLACEHOLDER - 3, tie_word_embeddings=False)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    (folder / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "Qwen2VLVideoProcessor", "size": {"shortest_edge": shape.extra["min_pixels"],
                                                                    "longest_edge": shape.extra["max_pixels"]},
         "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}))
    return Built(folder, model.state_dict(), model.model.language_model, model.lm_head, dict(known.options))


BUILDERS: Dict[str, Callable] = {"pllava": build_pllava, "internvl": build_internvl, "videollama3": build_videollama3,
                                 "qwen2_5_vl": build_qwen2_5_vl}


def build(name: str, folder: Path, device: str, dtype, small: bool, seed: int = 0):
    """(HookedVideoLLM, Built): the shape built on ``device`` in ``dtype`` with random weights
    (transformers' initialisation, ``seed``), and the videolens model converted from those tensors."""
    import videolens as vl
    from videolens.prompting.prompts import get_template
    from videolens.sources.hub import known_model

    shape = tiny(SHAPES[name]) if small else SHAPES[name]
    known = known_model(shape.hub_id)
    torch.manual_seed(seed)
    with torch.device(device), default_dtype(dtype), torch.no_grad():
        built = BUILDERS[shape.family](shape, folder, known)
    model = vl.HookedVideoLLM.from_pretrained(folder, device=device, dtype=dtype, state_dict=built.tensors,
                                              num_frames=known.num_frames, **built.options)
    if known.template:
        model.template = get_template(known.template)
    return model, built


def video(folder: Path):
    """The real clip of ../shared/data/videos when present (a decodable file), else a synthetic clip
    (a square moving over a 240x320 background, 16 frames) written as an mp4 into ``folder``, so each
    family samples its frames from a file either way."""
    from videolens.testing import write_clip

    clip = SHARED / "data" / "videos" / "cockatoo.mp4"
    if clip.is_file():
        try:
            import decord  # noqa: F401 (the decoder videolens uses for files)

            return str(clip), clip.name
        except ImportError:
            pass
    return str(write_clip(folder / "synthetic.mp4", n_frames=16, size=(240, 320))), "synthetic.mp4 (16 frames, 240x320)"


# ---- the methods -----------------------------------------------------------------------------------
def float_mask(blocked: torch.Tensor, dtype) -> torch.Tensor:
    """``[S, S]``: 0 where allowed, -inf where blocked or in the future (REFERENCE section 2)."""
    S = blocked.shape[-1]
    allowed = torch.ones(S, S, dtype=torch.bool, device=blocked.device).tril() & ~blocked
    return torch.zeros(S, S, dtype=dtype, device=blocked.device).masked_fill(~allowed, float("-inf"))


class LayerMasks:
    """Forward pre-hooks that hand each transformers decoder layer its own ``attention_mask``."""

    def __init__(self, layers):
        self.masks: List[Optional[torch.Tensor]] = [None] * len(layers)
        self.handles = [layer.register_forward_pre_hook(self._pre(i), with_kwargs=True) for i, layer in enumerate(layers)]

    def _pre(self, i):
        def hook(module, args, kwargs):
            m = self.masks[i]
            if callable(m):
                m = m()
            if m is not None:
                kwargs["attention_mask"] = m
            return args, kwargs
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def last_probs(text_model, head, embeds, ids, position_ids=None) -> torch.Tensor:
    """Option-letter probabilities ``[B, n_options]`` (full-vocabulary softmax at the last
    position); ``ids`` None: the last position's logits ``[B, d_vocab]``. ``position_ids``: as the
    text model takes them for one row (``[1, S]``, or ``[3, 1, S]`` for multimodal RoPE)."""
    kw = {}
    if position_ids is not None:
        kw["position_ids"] = position_ids.expand(*position_ids.shape[:-2], embeds.shape[0], position_ids.shape[-1])
    hidden = text_model(inputs_embeds=embeds, use_cache=False, **kw).last_hidden_state[:, -1]
    logits = head(hidden).float()
    return logits if ids is None else logits.softmax(-1)[:, ids]


def careful_user(built: Built, embeds, conditions, ids, batch: int, dtype, on_oom=None, position_ids=None):
    """(b): B conditions per forward, each row its own float mask on its own window's layers.
    Returns (``last_probs`` of every condition, the batch that fitted)."""
    text, L = built.text_model, len(built.text_model.layers)
    saved = text_attention(built)
    text.set_attn_implementation("sdpa")
    S = embeds.shape[1]
    causal = float_mask(torch.zeros(S, S, dtype=torch.bool, device=embeds.device), dtype)
    hooks = LayerMasks(text.layers)
    out, s = [], 0
    try:
        while s < len(conditions):
            chunk = conditions[s:s + batch]
            try:
                ko = torch.stack([float_mask(b, dtype) for b, _ in chunk])[:, None]  # [B, 1, S, S]
                for l in range(L):
                    active = torch.tensor([l in w for _, w in chunk], device=embeds.device)
                    hooks.masks[l] = (lambda a=active: torch.where(a[:, None, None, None], ko, causal)) if active.any() \
                        else causal.expand(len(chunk), 1, S, S)
                out.append(last_probs(text, built.head, embeds.expand(len(chunk), -1, -1), ids, position_ids))
            except torch.OutOfMemoryError:
                if len(chunk) == 1:
                    raise
                ko = None
                torch.cuda.empty_cache()
                batch = max(1, len(chunk) // 2)
                if on_oom is not None:
                    on_oom(batch)
                continue
            s += len(chunk)
    finally:
        hooks.remove()
        text.set_attn_implementation(saved)
    return torch.cat(out), batch


def forward_times(model, x_embeds, built: Built, embeds, position_ids, device, reps: int):
    """The plain forward, side by side: median seconds of videolens' hooked forward without hooks
    on the prepared input ``x_embeds`` (token embeddings with its prepared video tokens written in,
    which that forward does itself) and of the transformers text model with
    ``attn_implementation="sdpa"`` on those input embeddings (``embeds`` ``[1, S, d_model]``), both
    with the head on every position, in ``reps`` interleaved repetitions after one warm-up each; and
    the largest difference of their last-position logits.

    Returns:
        ``(videolens_s, transformers_s, max_abs_logit_diff)``.
    """
    text = built.text_model
    saved = text_attention(built)
    text.set_attn_implementation("sdpa")
    kw = {} if position_ids is None else {"position_ids": position_ids}

    def ours():
        return model(x_embeds)[0, -1]

    def theirs():
        return built.head(text(inputs_embeds=embeds, use_cache=False, **kw).last_hidden_state)[0, -1]

    times: Dict[str, List[float]] = {"ours": [], "theirs": []}
    try:
        with torch.no_grad():
            diff = float((ours().float() - theirs().float()).abs().max())  # the warm-up of both
            for _ in range(max(1, reps)):
                for name, fn in (("ours", ours), ("theirs", theirs)):
                    sync(device)
                    t0 = time.perf_counter()
                    fn()
                    sync(device)
                    times[name].append(time.perf_counter() - t0)
    finally:
        text.set_attn_implementation(saved)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return med["ours"], med["theirs"], diff


def text_attention(built: Built) -> str:
    """The attention implementation the text model runs now."""
    return built.text_model.config._attn_implementation


def paper_method(model, built: Built, pixels, clean_embeds, positions, condition, ids, dtype, position_ids=None):
    """(c): transformers eager, the vision tower rerun, one condition (REFERENCE section 11);
    ``position_ids`` as ``last_probs`` (M-RoPE families)."""
    text = built.text_model
    text.set_attn_implementation("eager")
    blocked, window = condition
    video = model.vision.encode(pixels)  # the vision front end, every condition
    emb = clean_embeds.clone()
    emb[0, positions] = video.reshape(-1, emb.shape[-1]).to(emb.dtype)
    S = emb.shape[1]
    causal = float_mask(torch.zeros(S, S, dtype=torch.bool, device=emb.device), dtype)[None, None]
    ko = float_mask(blocked, dtype)[None, None]
    hooks = LayerMasks(text.layers)
    hooks.masks = [ko if l in window else causal for l in range(len(text.layers))]
    try:
        return last_probs(text, built.head, emb, ids, position_ids)[0]
    finally:
        hooks.remove()


# ---- work and the physical limit ---------------------------------------------------------------------
def flop_per_row_layer(cfg, n_keys: float) -> float:
    """FLOP of one query row through one decoder layer: the projections and gated MLP (2 per
    multiply-add) and attention over ``n_keys`` keys (scores and values)."""
    d, dh, H = cfg.d_model, cfg.d_head, cfg.n_heads
    kv = (cfg.n_key_value_heads or H) * dh
    proj = 2 * (d * H * dh + 2 * d * kv + H * dh * d)
    mlp = 2 * 3 * d * cfg.d_mlp
    return proj + mlp + 2 * 2 * n_keys * H * dh


def gemm_rate(device, dtype, n: int) -> float:
    """FLOP/s of a ``n x n @ n x n`` matmul in ``dtype`` on ``device`` (the best of 5 timed runs)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(6):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def peak_reset(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if str(device).startswith("cuda") else float("nan")


KERNEL_KINDS = (("attention", ("fmha", "attention", "flash", "sdpa", "softmax")),  # before matmul: fmha_cutlass...
                ("matmul", ("gemm", "xmma", "nvjet", "cutlass", "cublas", "matmul", "::mm", "addmm", "bmm", "linear", "mkl")),
                ("copy / cat / index", ("copy", "cat", "index", "gather", "scatter", "stack", "expand", "clone", "fill")),)
"""How ``profile_run`` sorts kernels (first match of a lower-cased name wins; the rest is "other")."""


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other")


def profile_run(fn: Callable[[], object], device, path: Path) -> dict:
    """Run ``fn`` once under ``torch.profiler`` and write its top operators by device time to ``path``.

    Returns the summary the gap to the physical limit is read from: the wall time of the profiled
    run, the time the device spent in kernels (on the CPU: in operators), its share of the wall time
    (low: launch- or Python-bound; high: kernel-bound), the kernel time per kind (``KERNEL_KINDS``)
    and the number of kernel launches."""
    from torch.profiler import ProfilerActivity, profile

    cuda = str(device).startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync(device)
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    if cuda:  # device kernels: the events whose device time is their own
        kernels = [e for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
        timed, launches, sort_by = [(e.name, e.device_time_total) for e in kernels], len(kernels), "self_device_time_total"
    else:  # the CPU: operators' own time
        timed, launches, sort_by = [(e.key, e.self_cpu_time_total) for e in events], sum(e.count for e in events), \
            "self_cpu_time_total"
    by_kind: Dict[str, float] = {}
    for name, us in timed:
        kind = kernel_kind(name)
        by_kind[kind] = by_kind.get(kind, 0.0) + us / 1e6
    busy = sum(by_kind.values())
    table = events.table(sort_by=sort_by, row_limit=30, max_name_column_width=60)
    summary = {"wall_s": wall, "busy_s": busy, "busy_share": busy / wall if wall else float("nan"),
               "by_kind_s": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])), "launches": launches}
    Path(path).write_text(json.dumps(summary, indent=1) + "\n\n" + table)
    return summary


@torch.no_grad()  # as a decorator: a caller's grad mode comes back (tests call main in-process)
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="pllava-7b", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="toy widths and depths, same layout (a CPU check of the script)")
    ap.add_argument("--window", type=int, default=None, help="knockout window (default 9, the paper's; 3 with --tiny)")
    ap.add_argument("--paper-every", type=int, default=16, metavar="K",
                    help="run (c) on every K-th condition and scale its time (default 16)")
    ap.add_argument("--peer-batch", type=int, default=64, metavar="B",
                    help="(b)'s conditions per forward to start from (halved on out-of-memory; default 64)")
    ap.add_argument("--gemm", type=int, default=8192, help="matmul size measuring the device's bf16 rate (default 8192)")
    ap.add_argument("--forward-reps", type=int, default=5, metavar="N",
                    help="interleaved repetitions of the plain forward, videolens vs transformers sdpa (default 5)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--profile", default=None, metavar="FILE",
                    help="run (a) once more under torch.profiler: its top operators to FILE, and where its time goes "
                         "(device busy share, time per kernel kind, launches) printed and in the JSON")
    args = ap.parse_args(argv)
    dtype = torch.bfloat16
    dev = args.device

    import videolens as vl
    from videolens.hooked.edges import blocked_mask
    from videolens.knockout import TARGETS, KnockoutSettings, layer_window, sweep
    from videolens.knockout.engine import FastEngine

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model, built = build(args.family, Path(tmp) / args.family, dev, dtype, args.tiny)
        sync(dev)
        t_build = time.perf_counter() - t0
        cfg, L = model.cfg, model.cfg.n_layers
        window = args.window or (3 if args.tiny else 9)
        n_params = sum(t.numel() for t in built.tensors.values())
        clip, clip_name = video(Path(tmp))
        sample = vl.VideoQA(video=clip, **SAMPLE)
        t0 = time.perf_counter()
        x = model.prepare(sample, keep_pixels=True)
        sync(dev)
        t_prepare = time.perf_counter() - t0
        x_embeds = replace(x, pixel_values=None)
        _, cache = model.run_with_cache(x_embeds, names_filter="hook_embed")
        clean_embeds = cache["hook_embed"].to(dtype)
        del cache
        S, letters = x.seq_len, x.layout.letters
        ids = torch.tensor([x.option_token_ids[k] for k in letters], device=dev)
        pixels = x.pixel_values.to(dev)
        positions = x.video_positions.to(dev)
        pos3 = None  # M-RoPE families: the 3-D position ids transformers' text model takes, [3, 1, S]
        if model.mrope is not None:
            from videolens.frontend.qwen_vl import layout_position_ids

            pos3 = layout_position_ids(S, x.video_positions, x.layout.video_grid,
                                       model.vision.temporal_interval(x.video))[:, None].to(dev)
        print(f"{args.family}{' (tiny)' if args.tiny else ''}: {n_params / 1e9:.2f} B parameters, built in "
              f"{t_build:.1f} s; {L} layers, width {cfg.d_model}, {cfg.n_heads} heads / {cfg.n_key_value_heads or cfg.n_heads} "
              f"KV, MLP {cfg.d_mlp}, vocab {cfg.d_vocab}; video {clip_name}: grid {x.layout.video_grid}, {S} positions "
              f"(prepared in {t_prepare:.1f} s); device {dev}, bf16", flush=True)

        conditions, pairs = [], []
        for name in TARGET_NAMES:
            for pair in TARGETS[name].pairs:
                blocked = blocked_mask(x.layout, pair).to(dev)
                for c in range(L):
                    conditions.append((blocked, frozenset(layer_window(c, window, L))))
                    pairs.append((name, pair))
        n = len(conditions)

        # the plain forward: videolens' hooked forward against transformers SDPA (issue 29's 1.1x goal)
        t_fw, t_fw_hf, d_fw = forward_times(model, x_embeds, built, clean_embeds, pos3, dev, args.forward_reps)
        print(f"forward without hooks (prepared video tokens, head on all {S} positions, median of "
              f"{args.forward_reps}): videolens {1e3 * t_fw:.1f} ms, transformers sdpa {1e3 * t_fw_hf:.1f} ms, "
              f"max |d logit| {d_fw:.2e}", flush=True)

        # (a) videolens
        settings = KnockoutSettings(targets=TARGET_NAMES, window=window, samples="all", batch_conditions="auto")
        peak_reset(dev)
        sync(dev)
        t0 = time.perf_counter()
        clean = FastEngine().clean(model, x_embeds)
        recs = sweep(model, x_embeds, settings=settings, clean=clean)
        sync(dev)
        t_a = time.perf_counter() - t0
        mem_a = peak_gb(dev)
        p_a = torch.tensor([[r["ko_probs"][k] for k in letters] for r in recs])
        assert len(recs) == n, (len(recs), n)
        del clean
        prof = None
        if args.profile:
            prof = profile_run(lambda: sweep(model, x_embeds, settings=settings, clean=FastEngine().clean(model, x_embeds)),
                               dev, Path(args.profile))

        # (b) the careful transformers user
        oom = []
        peak_reset(dev)
        sync(dev)
        t0 = time.perf_counter()
        p_b, b_used = careful_user(built, clean_embeds, conditions, ids, min(args.peer_batch, n), dtype, oom.append,
                                   position_ids=pos3)
        sync(dev)
        t_b = time.perf_counter() - t0
        mem_b = peak_gb(dev)

        # (c) the paper's method on every K-th condition
        every = max(1, args.paper_every)
        peak_reset(dev)
        sync(dev)
        t0 = time.perf_counter()
        p_c = {i: paper_method(model, built, pixels, clean_embeds, positions, conditions[i], ids, dtype, pos3)
               for i in range(0, n, every)}
        sync(dev)
        t_c = (time.perf_counter() - t0) * n / len(p_c)
        mem_c = peak_gb(dev)

        # work: rows x layers each method recomputes, and its FLOP
        def q0(blocked):
            rows = blocked.any(-1).nonzero()
            return int(rows[0, 0]) if len(rows) else S

        work_a = sum((L - min(w)) * (S - q0(b)) for b, w in conditions)
        work_full = n * L * S
        flop_a = sum((L - min(w)) * (S - q0(b)) * flop_per_row_layer(cfg, (S + q0(b)) / 2 + (S - q0(b)) / 2)
                     for b, w in conditions)
        flop_full = work_full * flop_per_row_layer(cfg, S / 2)
        rate = gemm_rate(dev, dtype, args.gemm if not args.tiny else 512)
        limit = flop_a / rate

        scale = float(p_a.abs().max())  # random weights: option probabilities are small

        def diff(p):
            return float((p.cpu() - p_a).abs().max())

        d_c = max(float((p.cpu() - p_a[i]).abs().max()) for i, p in p_c.items())
        assert text_attention(built) == "eager"
        rows = [("(a) videolens, auto batch", t_a, mem_a, 0.0, work_a, flop_a),
                (f"(b) transformers sdpa, {b_used}/forward", t_b, mem_b, diff(p_b), work_full, flop_full),
                (f"(c) paper: eager, 1/forward, every {every}", t_c, mem_c, d_c, work_full, flop_full)]
        print(f"the paper's full sweep: {len(TARGET_NAMES)} targets, {n} conditions, window {window}, every centre layer; "
              f"largest option probability {scale:.2e} (random weights), so the differences below are bf16 rounding "
              f"when small beside it")
        print(f"{'method':44s} {'s/sample':>9s} {'peak GiB':>9s} {'max |dp| vs (a)':>16s} {'rows x layers':>14s} "
              f"{'TFLOP':>8s} {'TFLOP/s':>8s}")
        for label, t, mem, dp, work, flop in rows:
            print(f"{label:44s} {t:9.2f} {mem:9.2f} {dp:16.2e} {work:14,d} {flop / 1e12:8.2f} {flop / 1e12 / t:8.2f}")
        print(f"physical limit: bf16 GEMM {rate / 1e12:.1f} TFLOP/s measured here ({args.gemm if not args.tiny else 512}^3); "
              f"(a)'s work at that rate: {limit:.3f} s")
        if oom:
            print(f"(b) ran out of memory and halved its batch to {oom[-1]}")
        print(f"(b)/(a): {t_b / t_a:.2f}x")
        print(f"(c)/(a): {t_c / t_a:.2f}x")
        print(f"(a) / physical limit: {t_a / limit:.2f}x")
        print(f"forward without hooks, videolens / transformers sdpa: {t_fw / t_fw_hf:.2f}x (goal <= 1.1)")
        if prof is not None:
            kinds = ", ".join(f"{k} {v:.2f} s" for k, v in prof["by_kind_s"].items())
            print(f"(a) profiled ({Path(args.profile).name}): {prof['wall_s']:.2f} s wall, {'device' if dev.startswith('cuda') else 'CPU'} "
                  f"busy {prof['busy_s']:.2f} s ({100 * prof['busy_share']:.0f}%), {prof['launches']:,} "
                  f"{'kernel launches' if dev.startswith('cuda') else 'operator calls'}; {kinds}")
        result = {"family": args.family, "tiny": args.tiny, "device": dev,
                  "device_name": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu",
                  "params": n_params, "positions": S, "conditions": n, "window": window,
                  "seconds": {"a": t_a, "b": t_b, "c": t_c}, "peak_gib": {"a": mem_a, "b": mem_b, "c": mem_c},
                  "max_prob_diff": {"b": diff(p_b), "c": d_c}, "max_prob": scale, "work_rows_layers": {"a": work_a, "full": work_full},
                  "tflop": {"a": flop_a / 1e12, "full": flop_full / 1e12}, "gemm_tflops": rate / 1e12,
                  "limit_s": limit, "b_over_a": t_b / t_a, "c_over_a": t_c / t_a, "a_over_limit": t_a / limit,
                  "peer_batch": b_used, "profile_a": prof,
                  "forward_s": {"videolens": t_fw, "transformers_sdpa": t_fw_hf}, "forward_ratio": t_fw / t_fw_hf,
                  "forward_max_logit_diff": d_fw}
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return result


if __name__ == "__main__":
    main()
