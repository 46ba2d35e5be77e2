"""Dataset runs: the per-sample loop every dataset command shares (``samples``), resumable JSONL
records tied to their model and data (``records``), and torchrun sharding (``distributed``).

Layer: imports the shared modules, ``videolens.sources`` and ``videolens.prompting``; the analyses
build their dataset runners on it.
"""
