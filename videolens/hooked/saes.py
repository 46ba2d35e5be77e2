"""SAELens' sparse autoencoders spliced into a ``HookedVideoLLM``, as SAELens' ``HookedSAETransformer``
splices them into a ``HookedTransformer``.

The methods are SAELens' own (``sae_lens.HookedSAETransformer``'s ``add_sae``, ``reset_saes``, the
``saes`` context, ``run_with_saes``, ``run_with_cache_with_saes``, ``run_with_hooks_with_saes``),
called on the video model: an attached SAE replaces the hook point ``sae.cfg.metadata.hook_name`` by
SAELens' wrapper, so the cache holds ``<hook>.hook_sae_input``, ``.hook_sae_acts_post``,
``.hook_sae_recons``, ``.hook_sae_output`` (and ``.hook_sae_error`` with ``use_error_term=True``, where
the output equals the model's own activation: the reconstruction plus its error). What is added for
video inputs:

- an SAE whose hook point the model lacks, or whose width differs from the hook's, is refused in one
  line (``SAEMismatchError``); SAELens only logs a warning and skips it;
- ``positions=`` on the ``run_*_with_saes`` methods: the SAE acts only at those positions (a token
  group of the input's layout, ``"video"``, ``"question"``, ``"last"``, ``"frame:3"``, or indices); the
  model's own activation passes elsewhere (SAELens' token mask);
- an SAE trained by videolens on another model's activations (its ``videolens_model_fingerprint``)
  warns (``SAEModelWarning``).

Example::

    from sae_lens import SAE
    sae = SAE.load_from_disk("runs/sae/final")                 # trained by `videolens sae train`
    logits, cache = model.run_with_cache_with_saes(inputs, saes=[sae], positions="video")
    cache["blocks.2.hook_resid_post.hook_sae_acts_post"]       # [1, S, d_sae]
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, List, Optional, Sequence, Union

import torch

from ..errors import VideolensError

__all__ = ["SAEMixin", "SAEMismatchError", "SAEModelWarning", "hook_width", "require_sae_lens"]


class SAEMismatchError(VideolensError, ValueError):
    """An SAE that does not fit the model: its hook point is missing, or its width differs."""


class SAEModelWarning(UserWarning):
    """An SAE trained (by videolens) on another model's activations is attached."""


def require_sae_lens():
    """The ``sae_lens`` module.

    Raises:
        ImportError: one line naming the install (``pip install 'videolens[sae]'``).
    """
    try:
        import sae_lens
    except ImportError:
        raise ImportError("sparse autoencoders need SAELens: pip install 'videolens[sae]' (sae-lens>=6,<7)") from None
    return sae_lens


def _hooked_sae_transformer():
    require_sae_lens()
    from sae_lens import HookedSAETransformer

    return HookedSAETransformer


def _short(fingerprint) -> str:
    """A model fingerprint (``{file: digest}``, or a string) as 12 hex digits."""
    import hashlib
    import json

    text = fingerprint if isinstance(fingerprint, str) else json.dumps(fingerprint, sort_keys=True)
    return text[:12] if isinstance(fingerprint, str) else hashlib.sha256(text.encode()).hexdigest()[:12]


def hook_width(model, hook_name: str) -> Optional[int]:
    """The last-axis width an SAE on ``hook_name`` reads: ``d_model`` for residual, attention-out,
    MLP-out, embedding and normalised streams; ``n_heads * d_head`` for ``attn.hook_z`` (SAELens
    flattens the heads); ``d_mlp`` for ``mlp.hook_pre`` / ``hook_post``; None for other hooks (not
    checked)."""
    cfg = model.cfg
    leaf = hook_name.rsplit(".", 1)[-1]
    if leaf == "hook_z":
        return cfg.n_heads * cfg.d_head
    if leaf in ("hook_pre", "hook_post", "hook_pre_linear") and ".mlp." in f".{hook_name}":
        return cfg.d_mlp
    if leaf.startswith("hook_resid_") or leaf in ("hook_attn_out", "hook_mlp_out", "hook_embed", "hook_normalized"):
        return cfg.d_model
    return None


class SAEMixin:
    """``HookedSAETransformer``'s SAE methods on ``HookedVideoLLM`` (module doc). SAELens' functions
    run on this model; the checks and ``positions=`` are videolens'."""

    # ---- state SAELens' functions read -------------------------------------------------------------
    def _sae_state(self) -> None:
        if "_acts_to_saes" not in self.__dict__:
            self._acts_to_saes = {}
            self._transcoder_output_hooks = {}

    @property
    def acts_to_saes(self) -> dict:
        """``{hook name: attached SAE}``."""
        self._sae_state()
        return {name: wrapper.sae for name, wrapper in self._acts_to_saes.items()}

    def check_sae(self, sae) -> None:
        """Refuse an SAE this model cannot take; warn when it was trained on another model.

        Raises:
            SAEMismatchError: its hook point is not one of this model's (``model.hook_dict``), or its
                ``d_in`` is not the hook's width (``hook_width``); one line each.
        """
        self._sae_state()
        meta = sae.cfg.metadata
        name = meta.hook_name
        if name is None:
            raise SAEMismatchError("the SAE names no hook point (sae.cfg.metadata.hook_name is unset)")
        if name not in self.hook_dict and name not in self._acts_to_saes:
            close = [h for h in self.hook_dict if h.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]][:3]
            raise SAEMismatchError(f"the SAE reads hook point {name!r}, which this model ({self.cfg.n_layers} layers) "
                                   f"does not have" + (f"; e.g. {', '.join(close)}" if close else ""))
        if meta.hook_name_out is not None and meta.hook_name_out != name:
            raise SAEMismatchError(f"the SAE writes {meta.hook_name_out!r} from {name!r} (a transcoder): "
                                   "only SAEs reading and writing one hook point are spliced into video models")
        width = hook_width(self, name)
        if width is not None and int(sae.cfg.d_in) != width:
            raise SAEMismatchError(f"the SAE on {name!r} reads width {sae.cfg.d_in}, but this model's {name} is "
                                   f"{width} wide: it was trained on another model")
        trained_on = meta.get("videolens_model_fingerprint")
        mine = getattr(self, "fingerprint", None)
        if trained_on and mine and trained_on != mine:
            warnings.warn(f"the SAE on {name} was trained on the activations of model {_short(trained_on)}, not this "
                          f"one ({_short(mine)}): its features may not mean the same here", SAEModelWarning, stacklevel=3)

    # ---- SAELens' methods ------------------------------------------------------------------------------
    def add_sae(self, sae, use_error_term: Optional[bool] = None, exclude_special_tokens: Any = False) -> None:
        """Attach ``sae`` at its hook point until ``reset_saes`` (SAELens' ``add_sae``; replaces an SAE
        already there). ``use_error_term=True``: the output is the reconstruction plus its error, so
        the model's own activation (``hook_sae_error`` carries the error).

        Raises:
            SAEMismatchError: see ``check_sae``.
            ValueError: ``exclude_special_tokens`` (SAELens' per-token bypass): use ``positions=`` on the
                ``run_*_with_saes`` methods, which knows the video layout.
        """
        if exclude_special_tokens is not False:
            raise ValueError("exclude_special_tokens is not supported on video models: pass positions= "
                             "(e.g. positions='video') to run_with_saes / run_with_cache_with_saes")
        self.check_sae(sae)
        _hooked_sae_transformer().add_sae(self, sae, use_error_term=use_error_term)

    def _reset_sae(self, act_name: str, prev_wrapper=None) -> None:
        self._sae_state()
        _hooked_sae_transformer()._reset_sae(self, act_name, prev_wrapper)

    def reset_saes(self, act_names: Union[str, List[str], None] = None) -> None:
        """Remove the SAEs at ``act_names`` (all by default), restoring the plain hook points."""
        self._sae_state()
        _hooked_sae_transformer().reset_saes(self, act_names)

    @contextlib.contextmanager
    def saes(self, saes: Union[Any, Sequence[Any]] = (), reset_saes_end: bool = True,
             use_error_term: Optional[bool] = None):
        """Attach ``saes`` while the context lasts, restoring what was attached before (SAELens' ``saes``).

        Raises:
            SAEMismatchError: see ``check_sae`` (nothing is attached then).
        """
        saes = [saes] if not isinstance(saes, (list, tuple)) else list(saes)
        for sae in saes:
            self.check_sae(sae)
        with _hooked_sae_transformer().saes(self, saes=saes, reset_saes_end=reset_saes_end,
                                            use_error_term=use_error_term):
            yield self

    @contextlib.contextmanager
    def _sae_positions(self, saes: Sequence[Any], input, positions) -> Any:
        """SAELens' token mask on the wrappers of ``saes``: the SAE acts at ``positions`` only."""
        if positions is None:
            yield
            return
        from ..prompting.inputs import VideoLLMInput
        from ..prompting.layout import resolve_positions

        if isinstance(input, VideoLLMInput):
            if input.attention_mask is not None and not isinstance(positions, torch.Tensor) and \
                    any(isinstance(p, str) for p in ([positions] if isinstance(positions, str) else positions)):
                raise ValueError("positions: token groups of a left-padded batch differ by row; give the rows one at a "
                                 "time (batch[i]) or a [batch, pos] bool tensor")
            batch, seq, layout = int(input.tokens.shape[0]), int(input.seq_len), input.layout
        else:
            tokens = input if torch.is_tensor(input) else self.to_tokens(input)
            batch, seq, layout = int(tokens.shape[0]), int(tokens.shape[-1]), None
        if torch.is_tensor(positions) and positions.dtype == torch.bool:
            keep = positions.to(self.cfg.device).reshape(-1, seq).expand(batch, seq)
        else:
            keep = torch.zeros(batch, seq, dtype=torch.bool, device=self.cfg.device)
            keep[:, resolve_positions(positions, seq, layout).to(self.cfg.device)] = True
        wrappers = [self._acts_to_saes[s.cfg.metadata.hook_name] for s in saes]
        for w in wrappers:
            w.set_token_mask(~keep)  # SAELens: True = bypass the SAE
        try:
            yield
        finally:
            for w in wrappers:
                w.set_token_mask(None)

    @contextlib.contextmanager
    def _spliced(self, saes, reset_saes_end: bool, use_error_term: Optional[bool], input, positions):
        """``saes`` attached (``saes()``) and kept to ``positions`` (``_sae_positions``) for one call."""
        saes = [saes] if not isinstance(saes, (list, tuple)) else list(saes)
        with self.saes(saes, reset_saes_end, use_error_term), self._sae_positions(saes, input, positions):
            yield

    def run_with_saes(self, *model_args, saes: Union[Any, Sequence[Any]] = (), reset_saes_end: bool = True,
                      use_error_term: Optional[bool] = None, positions=None, **model_kwargs):
        """The forward with ``saes`` attached for this call (SAELens' ``run_with_saes``).

        Args:
            positions: where the SAEs act (module doc); None: every position.

        Raises:
            SAEMismatchError: see ``check_sae``.
        """
        with self._spliced(saes, reset_saes_end, use_error_term, model_args[0], positions):
            return self(*model_args, **model_kwargs)

    def run_with_cache_with_saes(self, *model_args, saes: Union[Any, Sequence[Any]] = (), reset_saes_end: bool = True,
                                 use_error_term: Optional[bool] = None, positions=None, **kwargs):
        """``run_with_cache`` with ``saes`` attached for this call (SAELens' ``run_with_cache_with_saes``):
        ``(logits, cache)``, the cache holding each SAE's ``<hook>.hook_sae_*`` activations.

        Raises:
            SAEMismatchError: see ``check_sae``.
        """
        with self._spliced(saes, reset_saes_end, use_error_term, model_args[0], positions):
            return self.run_with_cache(*model_args, **kwargs)

    def run_with_hooks_with_saes(self, *model_args, saes: Union[Any, Sequence[Any]] = (), reset_saes_end: bool = True,
                                 use_error_term: Optional[bool] = None, positions=None, fwd_hooks=(), bwd_hooks=(),
                                 **kwargs):
        """``run_with_hooks`` with ``saes`` attached for this call (SAELens' ``run_with_hooks_with_saes``):
        hooks on ``<hook>.hook_sae_acts_post`` edit features.

        Raises:
            SAEMismatchError: see ``check_sae``.
        """
        with self._spliced(saes, reset_saes_end, use_error_term, model_args[0], positions):
            return self.run_with_hooks(*model_args, fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks), **kwargs)
