"""HookedVideoLLM: a transformer_lens.HookedTransformer with a vision front end.

The language backbone is a plain ``HookedTransformer``; the only change is the token embedding,
which writes the video tokens over the placeholder positions before ``hook_embed``. So
``hook_embed``, every ``blocks.{l}.*`` hook, ``run_with_cache``, ``run_with_hooks``,
``ActivationCache.accumulated_resid`` / ``decompose_resid`` and ``transformer_lens.patching``
behave as TransformerLens users expect, with video embeddings in the residual stream.

Example::

    import videolens as vl
    model = vl.HookedVideoLLM.from_pretrained("path/to/checkpoint")
    sample = vl.VideoQA(video="clip.mp4", question="...", candidates=["...", "..."], answer="...")
    inputs = model.prepare(sample, num_frames=8)
    logits, cache = model.run_with_cache(inputs)
    cache["blocks.3.attn.hook_pattern"]      # [1, n_heads, S, S]
    model.option_probs(inputs)               # {"A": 0.71, "B": 0.29}
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Union

import torch
from jaxtyping import Float

from ..sources.data import VideoQA
from .._tl_compat import HookedTransformer, HookedTransformerConfig, set_rotary_tables
from .attention import install_fast_attention
from .block import install_fast_blocks
from .conventions import ConventionsMixin, warn_unreachable_vision_hooks
from .deepstack import DeepStack, add_deepstack_hooks
from .embed import VideoEmbed
from ..fingerprint import LazyFingerprint
from ..prompting.inputs import VideoLLMInput
from .preparing import prepare_one
from .saes import SAEMixin
from ..prompting.prompts import PromptTemplate, get_template
from ..prompting.tokenizers import adds_bos
from ..sources.video import DEFAULT_NUM_FRAMES

from ..errors import ContextLengthError, FramePoolingWarning, MissingVideoError, NonFiniteError  # noqa: E402

__all__ = ["HookedVideoLLM", "VideoEmbed", "ContextLengthError", "MissingVideoError", "FramePoolingWarning",
           "NonFiniteError"]


class HookedVideoLLM(SAEMixin, ConventionsMixin, HookedTransformer):
    """A VideoLLM whose language backbone is a TransformerLens ``HookedTransformer``.

    Build it with ``from_pretrained(path)``; ``prepare(sample)`` gives a ``VideoLLMInput`` that
    ``model(inputs)``, ``run_with_cache(inputs)`` and ``run_with_hooks(inputs, fwd_hooks=...)``
    accept anywhere a token tensor is accepted; SAELens' SAEs splice in as on its
    ``HookedSAETransformer`` (``run_with_saes``, ``run_with_cache_with_saes``, ``add_sae``:
    ``videolens.hooked.saes``).

    Attributes:
        vision: the vision front end (hooks ``vision.hook_pixel_values``,
            ``vision.hook_patch_features``, ``vision.hook_video_embeds``).
        placeholder_id: token id of the video placeholder.
        template: the prompt template (``videolens.prompting.prompts.PromptTemplate``).
        family: checkpoint family name.
    """

    fingerprint = LazyFingerprint()  # videolens.fingerprint.model_fingerprint of its files, on first read

    def __init__(
        self,
        cfg: HookedTransformerConfig,
        vision: torch.nn.Module,
        tokenizer,
        placeholder_id: int,
        template: Union[str, PromptTemplate],
        family: str = "custom",
        rope: Optional[tuple] = None,
        checkpoint_config: Optional[dict] = None,
    ):
        import warnings

        with warnings.catch_warnings():  # TL reloads the tokenizer by path; transformers then notes config fields
            warnings.simplefilter("ignore", FutureWarning)
            super().__init__(cfg, tokenizer=tokenizer, move_to_device=False)
        self.tokenizer = tokenizer  # keep the checkpoint's tokenizer as given
        # BOS as the checkpoint's tokenizer adds it (its add_bos_token / post-processor), as transformers
        # and TL's pretrained Llama do: text runs (model(text), to_tokens) start like every video prompt
        self.cfg.tokenizer_prepends_bos = self.cfg.default_prepend_bos = adds_bos(tokenizer)
        self.embed = VideoEmbed(self.cfg, int(placeholder_id))
        self.vision = vision
        self.placeholder_id = int(placeholder_id)
        self.template = get_template(template) if isinstance(template, str) else template
        self.family = family
        self.checkpoint_config = checkpoint_config or {}
        self.default_num_frames = int(self.checkpoint_config.get("num_frames") or DEFAULT_NUM_FRAMES)
        self.checkpoint_path: Optional[str] = None  # set by from_pretrained
        self.rope_switch = None  # videolens.hooked.rope.RopeSwitch for LongRoPE backbones
        self.frame_sampler: Optional[str] = None  # a family's own frame sampler (videolens.sources.video.SAMPLERS)
        self.mrope = None  # multimodal 3-D rotary positions, for families whose converter gives them
        if rope is not None:
            self.set_rope_tables(*rope)
        levels = int(getattr(vision, "deepstack_levels", 0))
        if levels:
            add_deepstack_hooks(self, levels)  # blocks.{l}.hook_deepstack, before setup() names them
        self.setup()
        self.deepstack = DeepStack(self, levels) if levels else None  # videolens.hooked.deepstack
        install_fast_attention(self)  # SDPA when no hook needs scores/patterns (videolens.hooked.attention)
        install_fast_blocks(self)  # ln1 once for q, k and v; the gated MLP's sum in one op (videolens.hooked.block)

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: Union[str, Path],
        device: Optional[Union[str, torch.device]] = None,
        dtype: torch.dtype = torch.float32,
        num_frames: Optional[int] = None,
        fold_ln: bool = False,
        center_writing_weights: bool = False,
        center_unembed: bool = False,
        fold_value_biases: bool = False,
        refactor_factored_attn_matrices: bool = False,
        preprocessing: str = "pil",
        state_dict: Optional[Dict[str, torch.Tensor]] = None,
        **options,
    ) -> "HookedVideoLLM":
        """Load a VideoLLM checkpoint (any registered family) from a folder, a known name or a hub id.

        Args:
            path: folder with config.json, safetensors (single or sharded) and tokenizer files;
                ``"tiny-videollm"`` for the bundled model; a known name (``videolens.sources.hub.MODELS``,
                whose settings apply where these arguments are None) or a hub id ``org/name``
                (fetched into the huggingface_hub cache; a local folder of that name wins).
            device: "cpu", "cuda", ... (default: cuda when available).
            dtype: weights dtype (torch.float32, torch.bfloat16, torch.float16).
            num_frames: frames ``prepare`` samples by default; None: the frames a given family
                option implies (a pooling shape's first entry, the official scripts' rule), else
                config.json's ``num_frames``, else 8 (``weights_conversion.options.default_num_frames``).
            fold_ln, center_writing_weights, center_unembed, fold_value_biases,
                refactor_factored_attn_matrices: TransformerLens' weight processing
                (``process_weights_``). All False by default, unlike TL's ``from_pretrained``:
                the weights stay the checkpoint's (the paper's numbers). ``fold_ln=True`` folds
                each RMSNorm's scale into the next weights (logits unchanged; then
                ``cache.logit_attrs`` over ``decompose_resid`` sums to the logit difference).
            options: the options the checkpoint's family declares, overriding config.json entries as
                the official scripts do (``weights_conversion.registry.model_options()`` lists them
                with their help; ``videolens models --options``); and huggingface_hub's ``revision``,
                ``cache_dir``, ``token``, ``local_files_only``.
            preprocessing: ``"pil"`` (transformers' PIL processor frame by frame, the paper's) or
                ``"torch"`` (batched on ``device``, within 2 uint8 levels: ``videolens.frontend.tensor_preprocess``;
                CLIP-style front ends only).
            state_dict: the checkpoint's tensors under their on-disk names, used instead of the
                folder's weight files (as transformers' ``from_pretrained(state_dict=)``): a model
                whose weights live in memory, e.g. random weights of a released shape built on a
                GPU (``benchmarks/paper_scale.py``). The folder then needs only config.json and
                the tokenizer files; the model has no fingerprint (``checkpoint_path`` None), as
                any model built in memory.

        Raises:
            FileNotFoundError: no such folder, and not a known name or hub id.
            videolens.sources.hub.HubError: a hub id not found, gated, offline and not cached, pickles only.
            weights_conversion.UnknownFamilyError: config.json names an unsupported model type.
            weights_conversion.CheckpointError (and its MissingWeightsError / UnexpectedWeightsError):
                an unreadable file, a wrongly typed config field, tensors missing, left unused or
                of the wrong shape (named in the message).
            ValueError: ``center_writing_weights`` on an RMSNorm model; ``preprocessing`` unknown or
                ``"torch"`` for a front end without CLIP-style preprocessing; an option the
                checkpoint's family does not declare or a value it refuses.
            TypeError: a keyword that is no family's option and no hub option.
        """
        from .loading import load_pretrained
        from ..frontend.tensor_preprocess import BACKENDS

        if preprocessing not in BACKENDS:
            raise ValueError(f"preprocessing must be one of {BACKENDS}, got {preprocessing!r}")

        model = load_pretrained(cls, path, device=device, dtype=dtype, num_frames=num_frames, state_dict=state_dict,
                                **options)
        model.process_weights_(fold_ln=fold_ln, center_writing_weights=center_writing_weights,
                               center_unembed=center_unembed, fold_value_biases=fold_value_biases,
                               refactor_factored_attn_matrices=refactor_factored_attn_matrices)
        if preprocessing != "pil":
            if not hasattr(model.vision.preprocess, "backend"):
                raise ValueError(f"preprocessing={preprocessing!r}: this family's front end "
                                 f"({type(model.vision.preprocess).__name__}) has no CLIP-style preprocessing to batch")
            model.vision.preprocess.backend = preprocessing
        return model

    def load_backbone_weights(self, state_dict: Dict[str, torch.Tensor]) -> None:
        """Load TransformerLens weights, requiring exactly the backbone's parameters
        (``videolens.hooked.loading.load_backbone_weights``)."""
        from .loading import load_backbone_weights

        load_backbone_weights(self, state_dict)

    def set_rope_tables(self, sin: torch.Tensor, cos: torch.Tensor) -> None:
        """Write RoPE sin/cos tables ``[n_ctx, d_head]`` (NeoX layout) into every block.

        The tables must cover ``cfg.n_ctx`` positions, so TransformerLens never recomputes
        plain RoPE behind our back."""
        if sin.shape[0] < self.cfg.n_ctx:
            raise ValueError(f"rope tables cover {sin.shape[0]} positions, n_ctx is {self.cfg.n_ctx}")
        for block in self.blocks:
            set_rotary_tables(block.attn, sin, cos)

    @property
    def allow_missing_video(self) -> bool:
        """Whether tokens holding the video placeholder may run without their video (default False:
        such a forward raises ``MissingVideoError``)."""
        return self.embed.allow_missing_video

    @allow_missing_video.setter
    def allow_missing_video(self, value: bool) -> None:
        self.embed.allow_missing_video = bool(value)

    # ---- inputs -------------------------------------------------------------------------------
    @property
    def video_width(self) -> int:
        """Width of ``VideoLLMInput.video_embeds``: ``d_model``, times ``1 + k`` for a model with
        ``k`` DeepStack levels packed after the video tokens (``videolens.hooked.deepstack``)."""
        return self.cfg.d_model * (1 + (self.deepstack.levels if self.deepstack is not None else 0))

    @property
    def device(self) -> torch.device:
        return self.embed.W_E.device

    def prepare(self, sample: Union[VideoQA, Sequence[VideoQA]], num_frames: Optional[int] = None,
                keep_pixels: bool = False) -> VideoLLMInput:
        """Decode the video, build the prompt with its TokenLayout, and run the vision front end once.

        Args:
            sample: the VideoQA sample (video path or decoded ``Video``), or a list of them: one
                batch (``videolens.prompting.inputs.stack_inputs``: left-padded when lengths differ).
            num_frames: frames to sample from the video (the official loader's rule); None means
                ``default_num_frames`` (see ``from_pretrained``).
            keep_pixels: keep the pixel values in the input, so every forward runs the vision
                front end again and its hook points (``vision.blocks.{i}.hook_resid_post``,
                ``vision.hook_patch_features``, ``vision.hook_out.projector`` / ``.pool``, ...)
                fire in ``run_with_cache`` / ``run_with_hooks``.

        Returns:
            ``VideoLLMInput`` with tokens ``[1, S]``, video embeddings ``[T', h, w, d_model]`` and
            the layout.

        Raises:
            ContextLengthError: the prompt is longer than ``cfg.n_ctx`` (before any compute).
            FileNotFoundError / videolens.sources.video.VideoDecodeError: unreadable video.
            videolens.prompting.inputs.PromptTokenizationError: placeholder or option letters not single tokens.
        """
        if isinstance(sample, (list, tuple)):
            from ..prompting.inputs import stack_inputs

            return stack_inputs([self.prepare(s, num_frames, keep_pixels) for s in sample])
        if num_frames is None:
            num_frames = self.default_num_frames
        return prepare_one(self, sample, num_frames, keep_pixels)

    @contextlib.contextmanager
    def _video_in(self, inputs: VideoLLMInput) -> Iterator[None]:
        if inputs.seq_len > self.cfg.n_ctx:
            raise ContextLengthError(f"{inputs.seq_len} positions exceed the context of {self.cfg.n_ctx}")
        inputs.check_fits(self)
        if inputs.pixel_values is not None:  # the front end runs here, so its hook points fire
            pixels = inputs.pixel_values.to(self.device)
            embeds = torch.stack([self.vision.encode(p) for p in (pixels if pixels.dim() == 5 else pixels[None])])
        else:
            warn_unreachable_vision_hooks(self)
            embeds = inputs.video_embeds.to(self.device)
        if embeds.dim() == 4:  # one sample: [T, h, w, d] -> [1, T, h, w, d]
            embeds = embeds[None]
        packed = embeds  # a DeepStack model's levels sit after the d_model video tokens
        embeds = self.vision.hook_video_embeds(embeds[..., :self.cfg.d_model])
        flat = embeds.reshape(embeds.shape[0], -1, embeds.shape[-1])
        positions = inputs.video_positions.to(self.device)
        if flat.shape[1] != positions.shape[-1]:
            raise ValueError(f"the video gives {flat.shape[1]} video tokens ({tuple(embeds.shape[1:4])}) but the prompt's "
                             f"layout has {positions.shape[-1]} video positions {inputs.layout.video_grid}; "
                             "prepare the sample again with this video")
        n = self.vision.n_trailing
        if n:  # e.g. one newline token right after the last video token
            tail = self.vision.trailing_embeds().to(flat.dtype)
            flat = torch.cat([flat, tail[None].expand(flat.shape[0], -1, -1)], dim=1)
            positions = torch.cat([positions, positions[..., -1:] + torch.arange(1, n + 1, device=positions.device)], -1)
        self.embed.video = (positions, flat)
        try:
            if self.deepstack is None:
                yield
            else:
                with self.deepstack.set_video((inputs.video_positions.to(self.device),
                                               self.deepstack.levels_of(packed))):
                    yield
        finally:
            self.embed.video = None

    def forward(self, input, *args, **kwargs):
        """As ``HookedTransformer.forward``; ``input`` may also be a ``VideoLLMInput``.

        With a ``VideoLLMInput``, ``return_type="loss"`` / ``"both"`` average the next-token loss
        over text targets only: predicting a video placeholder is not a language-model target
        (with ``loss_per_token=True`` those entries of ``[batch, pos - 1]`` are 0).
        """
        if self.mrope is not None:  # multimodal 3-D rotary positions: this input's position tables
            self.mrope.select(self, input, cached=kwargs.get("past_kv_cache") is not None
                              or kwargs.get("start_at_layer") is not None)
        entries = getattr(kwargs.get("past_kv_cache"), "entries", None) or []
        entry = next((e for e in entries if e is not None), None)  # a cache may skip the layers not run
        offset = int(entry.past_keys.shape[1]) if getattr(entry, "past_keys", None) is not None else 0
        if self.rope_switch is not None:  # LongRoPE: short or long tables by the largest position
            self.rope_switch.select(self, offset + self._n_positions(input))
        if self.deepstack is not None:  # where the residual rows of this forward sit
            self.deepstack.check_resume(kwargs.get("start_at_layer"), torch.is_tensor(input) and input.is_floating_point())
            self.deepstack.offset = offset
        if isinstance(input, VideoLLMInput):
            return_type = kwargs.get("return_type", args[0] if args else "logits")
            if input.attention_mask is not None:  # a left-padded batch
                kwargs.setdefault("attention_mask", input.attention_mask.to(self.device))
            if return_type in ("loss", "both"):
                return self._video_loss(input, return_type, bool(kwargs.pop("loss_per_token", False)),
                                        *args[1:], **{k: v for k, v in kwargs.items() if k != "return_type"})
            with self._video_in(input):
                return super().forward(input.tokens.to(self.device), *args, **kwargs)
        return super().forward(input, *args, **kwargs)

    def _n_positions(self, input) -> int:
        if isinstance(input, VideoLLMInput):
            return input.seq_len
        if isinstance(input, (str, list)):
            return int(self.to_tokens(input).shape[-1])
        return int(input.shape[-2] if input.is_floating_point() else input.shape[-1])  # embeddings or tokens

    def _video_loss(self, inputs: VideoLLMInput, return_type: str, per_token: bool, *args, **kwargs):
        from transformer_lens.utils import lm_cross_entropy_loss

        with self._video_in(inputs):
            logits = super().forward(inputs.tokens.to(self.device), "logits", *args, **kwargs)
        tokens = inputs.tokens.to(logits.device)
        loss = lm_cross_entropy_loss(logits, tokens, per_token=True)  # [batch, pos - 1]
        text = (torch.ones_like(tokens, dtype=torch.bool) if inputs.attention_mask is None
                else inputs.attention_mask.to(logits.device).bool().clone())
        pos = inputs.video_positions.to(logits.device)
        text[torch.arange(text.shape[0], device=logits.device)[:, None], pos.expand(text.shape[0], -1)] = False
        mask = text[:, 1:]  # the target of prediction i is token i + 1 (padding and video are no targets)
        if inputs.attention_mask is not None:  # nor is anything predicted from a padding position
            mask = mask & inputs.attention_mask.to(logits.device).bool()[:, :-1]
        loss = loss * mask if per_token else (loss * mask).sum() / mask.sum()
        return loss if return_type == "loss" else (logits, loss)

    def to_str_tokens(self, input, *args, **kwargs):
        """As TransformerLens; for a ``VideoLLMInput`` the video positions are labelled
        ``f3[2,5]`` (temporal slot 3, row 2, column 5) instead of the placeholder's text. A
        batch gives one list per row."""
        if not isinstance(input, VideoLLMInput):
            return super().to_str_tokens(input, *args, **kwargs)
        T, h, w = input.layout.video_grid
        labels = [f"f{t}[{r},{c}]" for t in range(T) for r in range(h) for c in range(w)]
        positions = input.video_positions  # [n], or [B, n] in a left-padded batch: each row its own
        positions = positions.expand(input.batch_size, -1) if positions.dim() == 1 else positions
        rows = []
        for row, row_positions in zip(input.tokens, positions):
            strs = list(super().to_str_tokens(row.cpu(), *args, **kwargs))
            for p, lab in zip(row_positions.tolist(), labels):
                strs[p] = lab
            rows.append(strs)
        return rows[0] if len(rows) == 1 else rows

    # ---- answers ------------------------------------------------------------------------------
    def option_logprobs(self, inputs: VideoLLMInput, logits: Optional[torch.Tensor] = None
                      ) -> Float[torch.Tensor, "*batch n_options"]:
        """Log-probabilities (full-vocabulary log-softmax, fp32) of each option letter at the last
        position: ``[n_options]`` for one input, ``[batch, n_options]`` for a stacked batch.

        Raises:
            NonFiniteError: the last position's logits hold NaN or infinity.
        """
        if logits is None:
            with torch.no_grad():
                logits = self(inputs)
        last = logits[:, -1].float()
        if last.shape[0] == 1:
            last = last[0]
        if not torch.isfinite(last).all():
            n = int((~torch.isfinite(last)).sum())
            raise NonFiniteError(f"the model's logits at the last position hold {n} NaN/inf value(s) "
                                 f"(dtype {self.cfg.dtype}); no option probabilities")
        logp = last.log_softmax(-1)
        ids = torch.tensor([inputs.option_token_ids[L] for L in inputs.layout.letters], device=logp.device)
        return logp[..., ids]

    def option_probs(self, inputs: VideoLLMInput, logits: Optional[torch.Tensor] = None
                     ) -> Union[Dict[str, float], List[Dict[str, float]]]:
        """Probability of each option letter at the last position (softmax over the full
        vocabulary, Map the Flow's methods): ``{"A": 0.71, "B": 0.12, ...}``.

        A stacked batch (``stack_inputs``) gives a list of such dicts, one per row.

        Raises:
            NonFiniteError: NaN or infinite logits (``option_logprobs``).
        """
        lp = self.option_logprobs(inputs, logits).detach()
        if lp.dim() == 2:  # a batch: one dict per row
            return [{L: float(p) for L, p in zip(inputs.layout.letters, row.exp())} for row in lp]
        return {L: float(p) for L, p in zip(inputs.layout.letters, lp.exp())}

    def answer(self, inputs: VideoLLMInput, logits: Optional[torch.Tensor] = None):
        """The option letter with the highest probability (a list, one per row, for a batch)."""
        probs = self.option_probs(inputs, logits)
        if isinstance(probs, list):
            return [max(p, key=p.get) for p in probs]
        return max(probs, key=probs.get)

    def generate(self, input=None, max_new_tokens: int = 16, *args, **kwargs):
        """Greedy decoding for a ``VideoLLMInput`` (``videolens.hooked.generation.generate``: ``return_type``
        ``"input"``/``"str"``/``"tokens"``, ``use_past_kv_cache``, ``stop_at_eos``, one continuation a
        row of a batch); any other input goes to ``HookedTransformer.generate`` unchanged.

        Raises:
            ValueError: sampling arguments (``do_sample=True``, ``temperature``, ``top_k``,
                ``top_p``, ...) or positional extras with a video input, which decodes greedily only.
        """
        if isinstance(input, VideoLLMInput):
            known = ("stop_at_eos", "verbose", "use_past_kv_cache", "return_type")
            sampling = {k: v for k, v in kwargs.items() if k not in known and v not in (None, False)}
            if args or sampling:
                raise ValueError(f"generate on a video input decodes greedily; {sorted(sampling) or 'positional arguments'} "
                                 "not supported (use HookedTransformer.generate's sampling on text-only inputs)")
            from .generation import generate

            return generate(self, input, max_new_tokens, kwargs.get("stop_at_eos", True),
                            kwargs.get("use_past_kv_cache", True), kwargs.get("return_type", "input"))
        return super().generate(input, max_new_tokens, *args, **kwargs)
