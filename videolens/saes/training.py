"""Training an SAE on a VideoLLM's activations with SAELens' own trainer (``SAETrainer``) and SAE
classes, fed by ``videolens.saes.activations.ActivationSource``.

``train_sae`` writes into one folder:

- ``run.json``: the run's identity (the model and its fingerprint, the data, the hook point and
  positions, the SAE and trainer settings); a second call into the folder with another identity is
  refused (``videolens.running.records.RunConfigMismatch``), the same identity resumes;
- ``checkpoints/<samples>/``: SAELens' checkpoints (weights, trainer state, feature sparsity) plus
  the activation source's state (``videolens_source.pt``); the latest one is resumed exactly (the
  same rows in the same order, the optimizer and schedules where they were);
- ``final/``: the trained SAE as SAELens saves it for inference (``SAE.load_from_disk``), its
  metadata naming the hook point, the model (``videolens_model_fingerprint``), the positions and
  the data;
- ``training.json``: what it reached on clips it was not trained on when given (else on training
  rows): mean squared error, explained variance, L0, dead features.

Example::

    settings = SAETrainingSettings(hook_name="blocks.2.hook_resid_post", positions="video",
                                   d_sae=512, total_training_samples=200_000)
    sae, summary = train_sae(model, samples, settings, "runs/sae")
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..registry import Registry
from ..sources.data import VideoQA
from ..hooked.saes import hook_width, require_sae_lens
from ..prompting.layout import PositionSpec
from .activations import ActivationSource, hook_activations

__all__ = ["SAETrainingSettings", "ARCHITECTURES", "train_sae", "latest_checkpoint", "SOURCE_STATE", "evaluate_sae",
           "bundled_sae_eval_clips"]

SOURCE_STATE = "videolens_source.pt"

ARCHITECTURES: Registry[Tuple[str, str, Tuple[str, ...]]] = Registry("SAE architecture", {
    # name -> (SAELens training SAE class, its config class, the settings fields it takes)
    "standard": ("StandardTrainingSAE", "StandardTrainingSAEConfig", ("l1_coefficient",)),
    "topk": ("TopKTrainingSAE", "TopKTrainingSAEConfig", ("k",)),
    "batchtopk": ("BatchTopKTrainingSAE", "BatchTopKTrainingSAEConfig", ("k",)),
    "jumprelu": ("JumpReLUTrainingSAE", "JumpReLUTrainingSAEConfig", ("l0_coefficient",)),
})
"""The SAELens architectures ``train_sae`` builds, by SAELens' own architecture names."""


@dataclass
class SAETrainingSettings:
    """What to train (SAELens' field names where it has them).

    Attributes:
        hook_name: the hook point (``blocks.2.hook_resid_post``).
        positions: which positions of each clip feed the SAE (``"video"``, ``"question"``, ``"last"``,
            a list of token groups, or None for all).
        architecture: an ``ARCHITECTURES`` name.
        d_sae: features (default ``expansion_factor`` x the hook's width).
        expansion_factor: used when ``d_sae`` is None.
        l1_coefficient / k / l0_coefficient: the sparsity setting of the architecture.
        lr, lr_end (default lr / 10, as SAELens), lr_scheduler_name, lr_warm_up_steps: SAELens' trainer.
        total_training_samples: activation rows to train on; batch_size: rows per step.
        n_checkpoints: checkpoints written during training (resumable).
        clips_per_fill, seed, num_frames: the activation source.
        normalize_activations: SAELens' input normalisation (``"none"``, its default, or
            ``"expected_average_only_in"``: inputs scaled to an average norm of sqrt(d_in) during
            training, the factor folded into the weights at the end), estimated over
            ``n_batches_for_norm_estimate`` batches (SAELens' default 1000; 100 here, each batch a
            model forward over clips).
    """

    hook_name: str
    positions: PositionSpec = "video"
    architecture: str = "standard"
    d_sae: Optional[int] = None
    expansion_factor: int = 4
    l1_coefficient: float = 1.0
    k: int = 32
    l0_coefficient: float = 1.0
    lr: float = 3e-4
    lr_end: Optional[float] = None
    lr_scheduler_name: str = "constant"
    lr_warm_up_steps: int = 0
    total_training_samples: int = 100_000
    batch_size: int = 256
    n_checkpoints: int = 4
    clips_per_fill: int = 16
    seed: int = 0
    num_frames: Optional[int] = None
    dead_feature_window: int = 1000
    feature_sampling_window: int = 2000
    normalize_activations: str = "none"
    n_batches_for_norm_estimate: int = 100


def latest_checkpoint(folder: Union[str, Path]) -> Optional[Path]:
    """The checkpoint of ``folder/checkpoints`` with the most samples that holds the source state too."""
    ckpts = [p for p in (Path(folder) / "checkpoints").glob("*") if p.name.isdigit() and (p / SOURCE_STATE).is_file()]
    return max(ckpts, key=lambda p: int(p.name)) if ckpts else None


def _build_sae(settings: SAETrainingSettings, d_in: int, metadata: Dict[str, Any]):
    sae_lens = require_sae_lens()
    from sae_lens.saes.sae import SAEMetadata

    sae_cls, cfg_cls, fields = ARCHITECTURES[settings.architecture]
    d_sae = settings.d_sae or settings.expansion_factor * d_in
    kwargs = {f: getattr(settings, f) for f in fields}
    cfg = getattr(sae_lens, cfg_cls)(
        d_in=d_in, d_sae=int(d_sae), metadata=SAEMetadata(**metadata), normalize_activations=settings.normalize_activations,
        reshape_activations="hook_z" if settings.hook_name.endswith("hook_z") else "none", **kwargs)
    torch.manual_seed(settings.seed)
    return getattr(sae_lens, sae_cls)(cfg)


def _identity(model, data: Dict[str, Any], settings: SAETrainingSettings, model_name: Optional[str]) -> Dict[str, Any]:
    model_name = model_name or model.checkpoint_path or getattr(model, "family", "model")
    return {"command": "sae train", "model": str(model_name), "model_fingerprint": getattr(model, "fingerprint", None),
            "dtype": str(model.cfg.dtype), "data": data, "settings": asdict(settings)}


def train_sae(model, samples: Sequence[VideoQA], settings: SAETrainingSettings, out_dir: Union[str, Path],
              data: Optional[Dict[str, Any]] = None, eval_samples: Sequence[VideoQA] = (),
              progress: bool = True, model_name: Optional[str] = None):
    """Train an SAE on ``settings.hook_name`` over ``samples`` with SAELens' ``SAETrainer``, resuming
    the latest checkpoint in ``out_dir`` (module doc).

    Args:
        data: what ``samples`` are, for the run's identity (e.g. the annotation files' fingerprint);
            default: the sample ids.
        eval_samples: clips not trained on, for ``training.json`` (default: rows of the training clips).
        progress: SAELens' progress bar.
        model_name: how the run names the model (default its checkpoint folder).

    Returns:
        ``(sae, summary)``: the trained SAE as saved in ``out_dir/final`` (``sae_lens.SAE``, on the
        model's device) and the ``training.json`` numbers. A folder whose training is complete is
        not trained again: its SAE and numbers are returned.

    Raises:
        videolens.running.records.RunConfigMismatch: ``out_dir`` holds another run.
        KeyError: no such hook point, or an unknown architecture.
        ValueError: no samples.
    """
    require_sae_lens()
    from sae_lens import SAE, SAETrainer
    from sae_lens.config import SAETrainerConfig

    from ..running.records import RunConfigMismatch, config_differences

    if settings.hook_name not in model.hook_dict:
        raise KeyError(f"the model has no hook point {settings.hook_name!r} (model.hook_dict lists them)")
    if settings.architecture not in ARCHITECTURES:
        raise KeyError(f"unknown SAE architecture {settings.architecture!r}; known: {', '.join(ARCHITECTURES)}")
    if not samples:
        raise ValueError("no clips to train on")
    out = Path(out_dir)
    data = data if data is not None else {"sample_ids": [s.sample_id for s in samples]}
    identity = json.loads(json.dumps(_identity(model, data, settings, model_name), default=str))
    run_file = out / "run.json"
    if run_file.is_file():
        old = json.loads(run_file.read_text())
        diff = config_differences(old, identity)
        if diff:
            raise RunConfigMismatch(f"{out} holds another SAE training ({'; '.join(diff[:3])}); use a new --out "
                                    "or remove it")
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(identity, indent=1))
    if (out / "final" / "cfg.json").is_file() and (out / "training.json").is_file():  # done: nothing to resume
        return SAE.load_from_disk(str(out / "final"), device=str(model.cfg.device)), {
            **json.loads((out / "training.json").read_text()), "already_trained": True}

    d_in = hook_width(model, settings.hook_name)
    source = ActivationSource(model, samples, settings.hook_name, settings.positions, settings.batch_size,
                              settings.clips_per_fill, settings.seed, settings.num_frames)
    if d_in is None:
        d_in = int(hook_activations(model, model.prepare(samples[0], settings.num_frames), settings.hook_name,
                                    settings.positions).shape[-1])
    metadata = {"hook_name": settings.hook_name, "model_name": identity["model"],
                "videolens_model_fingerprint": identity["model_fingerprint"],
                "videolens_positions": settings.positions, "videolens_data": data.get("fingerprint") or data}
    sae = _build_sae(settings, d_in, metadata).to(model.cfg.device)

    def save_source(checkpoint_path=None):
        if checkpoint_path is not None:
            torch.save(source.state_dict(), Path(checkpoint_path) / SOURCE_STATE)

    trainer_cfg = SAETrainerConfig(
        total_training_samples=int(settings.total_training_samples), train_batch_size_samples=settings.batch_size,
        lr=settings.lr, lr_end=settings.lr_end if settings.lr_end is not None else settings.lr / 10,
        lr_scheduler_name=settings.lr_scheduler_name, lr_warm_up_steps=settings.lr_warm_up_steps,
        device=str(model.cfg.device), n_checkpoints=settings.n_checkpoints, checkpoint_path=str(out / "checkpoints"),
        dead_feature_window=settings.dead_feature_window, feature_sampling_window=settings.feature_sampling_window,
        n_batches_for_norm_estimate=settings.n_batches_for_norm_estimate)
    trainer = SAETrainer(trainer_cfg, sae, source, save_checkpoint_fn=save_source)
    resumed = latest_checkpoint(out)
    if resumed is not None:
        trainer.load_trainer_state(resumed)
        sae.load_weights_from_checkpoint(resumed)
        source.load_state_dict(torch.load(resumed / SOURCE_STATE, weights_only=False))
        trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= trainer.n_training_samples]
    with _quiet(not progress), torch.enable_grad():  # a notebook's torch.set_grad_enabled(False) must not stop it
        sae = trainer.fit()
    sae.save_inference_model(str(out / "final"))
    rows = _eval_rows(model, eval_samples, settings) if eval_samples else None
    if rows is None:
        rows = torch.cat([next(source) for _ in range(4)])
    summary = {**evaluate_sae(sae, rows.to(model.cfg.device)), "trained_samples": trainer.n_training_samples,
               "steps": trainer.n_training_samples // settings.batch_size, "resumed_from": str(resumed) if resumed else None,
               "evaluated_on": "eval clips" if eval_samples else "training clips", "skipped_clips": source.skipped,
               "final": "final"}
    (out / "training.json").write_text(json.dumps(summary, indent=1))
    return SAE.load_from_disk(str(out / "final"), device=str(model.cfg.device)), summary


@contextlib.contextmanager
def _quiet(quiet: bool):
    """SAELens' progress bars off while the context lasts (its trainer's and norm estimate's ``tqdm``)."""
    import functools

    from sae_lens.training import activation_scaler, sae_trainer

    modules = [m for m in (sae_trainer, activation_scaler) if hasattr(m, "tqdm")]
    before = [m.tqdm for m in modules]
    if quiet:
        for m, t in zip(modules, before):
            m.tqdm = functools.partial(t, disable=True)
    try:
        yield
    finally:
        for m, t in zip(modules, before):
            m.tqdm = t


def _eval_rows(model, samples: Sequence[VideoQA], settings: SAETrainingSettings) -> Optional[torch.Tensor]:
    from ..running.samples import prepare_or_skip

    rows = []
    for s in samples:
        inputs, _, _ = prepare_or_skip(model, s, settings.num_frames)
        if inputs is not None:
            rows.append(hook_activations(model, inputs, settings.hook_name, settings.positions))
    return torch.cat(rows) if rows else None


@torch.no_grad()
def evaluate_sae(sae, rows: torch.Tensor) -> Dict[str, float]:
    """An SAE on activation rows ``[n, d_in]``: ``mse`` (SAELens' ``mse_loss``: the squared error summed
    over dims, averaged over rows), ``explained_variance``
    (1 - residual variance / variance, per row summed over dims, averaged), ``l0`` (mean active features
    per row) and ``dead_features`` (never active on these rows)."""
    acts = sae.encode(rows.to(sae.dtype))
    recon = sae.decode(acts)
    err = (recon - rows).float()
    var = (rows - rows.mean(0)).float().pow(2).sum(-1)
    return {"mse": float(err.pow(2).sum(-1).mean()), "explained_variance": float(1 - err.pow(2).sum(-1).mean() / var.mean()),
            "l0": float((acts > 0).float().sum(-1).mean()), "dead_features": int(((acts > 0).sum(0) == 0).sum()),
            "rows": int(rows.shape[0]), "d_sae": int(acts.shape[-1])}


def bundled_sae_eval_clips():
    """The synthetic clips the bundled SAE was evaluated on and never trained on (the held-out tail
    of its ``run.json``'s clips), as ``SyntheticSample``."""
    from ..bundled import bundled_sae_path
    from ..sources.synthetic import interleaved_samples

    data = json.loads((bundled_sae_path() / "run.json").read_text())["data"]
    clips = interleaved_samples(data["synthetic"], data["n_clips"], data["clip_seed"])
    return clips[len(clips) - data["eval_clips"]:]
