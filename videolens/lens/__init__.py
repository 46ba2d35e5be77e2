"""Logit lens, keyword tracking and answer probability by layer (paper Findings 2 and 3).

Example::

    import videolens as vl
    lens = vl.lens.logit_lens(model, inputs, positions="video", k=5)      # LensResult
    kw = vl.lens.KeywordMatcher.from_tokenizer(vl.lens.load_keywords("action_sequence"), model.tokenizer)
    counts = vl.lens.count_keywords(lens, kw, inputs.layout)              # per layer / frame / cell
    counts.binned(5)                                                       # {"L0-4": {...}, ...}
    ap = vl.lens.answer_probability_by_layer(model, inputs)               # probs [n_layers + 1, n_options]

    from videolens.plots import lens as plots
    plots.plot_keyword_frequency(counts.binned(5), "freq.png")
    plots.plot_word_map(inputs.video.frames, counts.hit_records(lens), inputs.layout.video_grid,
                        vl.lens.layer_bins(model.cfg.n_layers, 5), "words.png")
    plots.plot_answer_probability(ap.true_probs[None], ap.false_probs.mean(1)[None], ap.layers, "p.png")

CLI: ``videolens lens`` and ``videolens genprob`` (records, progress bar, the same figures).
"""

from .core import (
    LENS_MODES,
    LensMode,
    LensResult,
    capture_resid,
    resid_label,
    lens_logits,
    logit_lens,
    register_lens_mode,
    resid_hook_name,
    resolve_lens_layers,
    resolve_positions,
)
from .early_exit import EarlyExit, early_exit
from .genprob import AnswerProbabilities, answer_probability_by_layer
from .keywords import (
    KeywordCounts,
    KeywordMatcher,
    KeywordSet,
    builtin_keyword_sets,
    count_keywords,
    layer_bins,
    load_keywords,
    merge_keyword_sets,
)

__all__ = [
    "logit_lens",
    "LensResult",
    "LensMode",
    "LENS_MODES",
    "register_lens_mode",
    "resolve_lens_layers",
    "answer_probability_by_layer",
    "AnswerProbabilities",
    "early_exit",
    "EarlyExit",
    "KeywordSet",
    "KeywordMatcher",
    "KeywordCounts",
    "load_keywords",
    "merge_keyword_sets",
    "count_keywords",
    "layer_bins",
]
