"""From a sample to tokens: prompt templates as data (``prompts``), tokenizers (``tokenizers``), the
token layout with its named spans (``layout``) and the model input (``inputs``).

Layer: imports the shared modules and ``videolens.sources``.
"""
