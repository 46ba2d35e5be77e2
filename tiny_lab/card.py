"""The model card (MODEL_CARD.md, a huggingface_hub ModelCard, and model_card.json) of an evaluated
checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence


from videolens import synthetic

def results_table(res: Dict[str, Dict[str, float]], conditions: Sequence[str]) -> str:
    """Markdown table of accuracies (percent), one row per task, with chance."""
    head = "| task | chance | " + " | ".join(conditions) + " |"
    rows = [head, "|" + "---|" * (len(conditions) + 2)]
    for task, r in res.items():
        chance = 100 / synthetic.TASKS[task].n_options
        rows.append(f"| {task} | {chance:.0f} | " + " | ".join(f"{100 * r[c]:.0f}" for c in conditions) + " |")
    return "\n".join(rows)


def layer_table(res: Dict[str, Dict[str, float]], n_layers: int) -> str:
    """Markdown table: accuracy (percent) with cross-frame edges blocked in one layer only, and
    in layers >= l, per task."""
    cols = [f"only L{l}" for l in range(n_layers)] + [f"L{l}+" for l in range(n_layers)]
    keys = [f"knockout_layer_{l}" for l in range(n_layers)] + [f"knockout_from_{l}" for l in range(n_layers)]
    rows = ["| task | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for task, r in res.items():
        rows.append(f"| {task} | " + " | ".join(f"{100 * r[k]:.0f}" for k in keys) + " |")
    return "\n".join(rows)


def write_model_card(folder: Path, res: Dict[str, Dict[str, float]], n_layers: int, pathway_layers: Sequence[int],
                     recipe: str, train_cfg: Dict, n_per_task: int, sweep_window: int = 1) -> Path:
    """Write ``MODEL_CARD.md`` and ``model_card.json`` (machine-readable: accuracies and the
    layers of the planted cross-frame pathway, read by the tests) into a checkpoint folder."""
    folder = Path(folder)
    card = {"accuracy": res, "pathway": {"cross_frame_layers": list(pathway_layers), "sweep_window": sweep_window},
            "n_per_task": n_per_task,
            "training": {"recipe": recipe, "config": train_cfg}}
    (folder / "model_card.json").write_text(json.dumps(card, indent=1))
    tasks = "\n".join(f"- `{t}` ({'temporal' if spec.temporal else 'static control'}, {spec.n_options} options): "
                      f"{spec.questions[0]!r} -> e.g. {spec.options[0]!r}" for t, spec in synthetic.TASKS.items())
    lines = pathway_layers
    text = f"""# tiny-videollm: the bundled VideoLLM (videolens issue 4)

A PLLaVA-style VideoLLM trained by `tiny_lab` on CPU on synthetic TVBench-style clips
(`videolens.sources.synthetic`), saved in the same checkpoint format as the real PLLaVA / LLaVA-NeXT-Video
checkpoints and loaded by `HookedVideoLLM.from_pretrained`. It is a testbed with a planted
information pathway, not a general video model: it knows only the words and scenes below.

## Architecture
CLIP vision tower (32 px, patch 4, width 64, 3 layers; `hidden_states[-2]` without CLS) ->
projector MLP (64 -> 128 -> 128, GELU) -> 3-D average pooling to 8 x 4 x 4 = 128 video tokens ->
Llama (width 128, {n_layers} layers, 4 heads, MLP 256), word-level tokenizer (saved with the
checkpoint), the `eval_mvbench` prompt; the answer is the option letter at the last position.
8 frames per clip (the MVBench middle-of-segment rule over 16 frames); fp16 weights.

## Tasks (options shuffled per sample)
{tasks}

## Accuracy (percent; {n_per_task} fresh clips per task, seeds never used in training)
`causal`: plain model. `knockout`: video->video cross-frame attention edges blocked in every
layer. `first_frame` / `last_frame`: every frame replaced by that frame.

{results_table(res, ["causal", "knockout", "first_frame", "last_frame"])}

Cross-frame edges blocked in one layer only (`only Ll`) and in layers >= l (`Ll+`), first 50 clips:

{layer_table(res, n_layers)}

## The known pathway (planted)
During training the text positions after the video could read only the LAST frame's video tokens
(and, on other samples, every frame; see the recipe), so temporal information has to be gathered
into the last frame's tokens by cross-frame attention among video tokens. That happens in layers
{", ".join(map(str, lines))}: blocking cross-frame edges there takes every temporal task to chance
while the static colour task is unaffected (tables above; asserted in `tests/test_bundled_model.py`).
Besides the option letter, the training put two readable intermediate signals in the prompt (the
loss read them, the prompt text is the unchanged `eval_mvbench` one): the last token of every
option line predicts `Yes` (the right option) or `No`, and the positions just before `Best option:(`
predict the words of the answer. The logit lens shows both.

## Training recipe
`{recipe}` (CPU, seed 0, fp32; the phases are listed in `tiny_lab/recipes/tiny-videollm.json`,
each starting from the previous one's weights). Stage 1 (alignment, as LLaVA's stage 1): tower and
projector alone regress every video token to the word embedding of the colour its region shows
(the padding embedding for black), plus a cyclic code of the region's row and column, so that
video tokens carry colour and position in the language model's own space. Stage 2: tower and
projector frozen; the language model trains on multiple-choice samples with the letter loss plus
the two intermediate targets above, each sample under one attention mode: `last` (text reads only
the last frame), `full` (plain causal), or `knockout` (cross-frame edges blocked; temporal tasks
then target a uniform distribution over the letters, static ones the right letter). For moving
direction, the object's video token in every frame after the first also predicts the direction
words (`Up`/`Down`, `left`/`right`), read through the logit lens after block
{train_cfg.get("video_targets_layer") or n_layers} (`--video-targets-layer`), and its knockout draws run in mode
`last` instead (`--no-knockout`: with the uniform target the letter hedged at chance in every
mode).
Config: `{json.dumps(train_cfg)}`
"""
    return save_card(folder / "MODEL_CARD.md", text)


def save_card(path: Path, text: str) -> Path:
    """``text`` as a huggingface_hub ``ModelCard`` with its metadata header (library, tags, the
    base format), written to ``path``."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(library_name="videolens", tags=["video-llm", "interpretability", "synthetic", "pllava"],
                         pipeline_tag="video-text-to-text")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")
    card.save(path)
    return Path(path)

