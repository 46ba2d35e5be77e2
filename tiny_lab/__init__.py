"""The training lab of the bundled tiny VideoLLM (``videolens/assets/tiny-videollm``), kept beside
the library: users of videolens never import it. Lab notes: ``docs/tiny_model.md``.

Run (CPU, not in CI)::

    python -m tiny_lab --out runs/tiny --recipe        # every phase of recipes/tiny-videollm.json, in order
    python -m tiny_lab --out runs/one --seed 0 ...      # a single phase (see --help)
    python -m tiny_lab --out runs/eval --evaluate runs/tiny/p11_letter_weight/export

Modules: ``config`` (TrainConfig, parsed by transformers' HfArgumentParser), ``model``,
``batches``, ``train`` (losses, loop with transformers' cosine schedule, export), ``evaluate`` (a
saved checkpoint through HookedVideoLLM), ``card`` (the model card, huggingface_hub's ModelCard),
``recipe`` (recipe files: ``recipes/*.json``, the phases as data), ``cli``.
"""

from .batches import Batcher, Item, alignment_targets, region_position_codes, token_colour_ids
from .card import layer_table, results_table, write_model_card
from .cli import main, run_recipe
from .config import CROSS_FRAME, MODES, LabOptions, TrainConfig, parse, phase_config
from .evaluate import answered_right, batched_last_logits, evaluate_checkpoint
from .model import TinyVideoLLM, build_model, build_tokenizer
from .recipe import RECIPE_FILE, load_recipe, recipe_configs
from .train import alignment_loss, batch_loss, evaluate, export, pretrain_vision, sample_mode, text_loss, train

__all__ = [
    "Batcher", "Item", "alignment_targets", "region_position_codes", "token_colour_ids", "layer_table",
    "results_table", "write_model_card", "main", "run_recipe", "CROSS_FRAME", "MODES", "TrainConfig",
    "LabOptions", "parse", "phase_config", "answered_right", "batched_last_logits", "evaluate_checkpoint", "TinyVideoLLM",
    "build_model", "build_tokenizer", "RECIPE_FILE", "load_recipe", "recipe_configs", "alignment_loss", "batch_loss", "evaluate", "export",
    "pretrain_vision", "sample_mode", "text_loss", "train",
]
