"""The hooked model: ``HookedVideoLLM`` (``model``), built from a checkpoint by ``loading`` (through
``weights_conversion``), one sample to its input (``preparing``), video tokens into the residual
stream (``embed``), attention edges between token groups as masks (``edges``), the fast attention
path and score-mask hooks (``attention``), rotary tables (``rope``), decoding (``generation``), and
the TransformerLens conventions kept where loading differs (``conventions``).

Layer: imports everything below it (shared, sources, prompting, frontend, weights_conversion).
"""
