"""Where samples come from: video decoding and frame sampling (``video``), VideoQA samples and
annotation files (``data``, ``formats``), benchmarks and checkpoints by name from the Hugging Face
hub (``datasets``, ``hub``), and the synthetic tasks with their pixels (``synthetic``, ``scenes``).

Layer: imports only the shared modules (``videolens.errors``, ``registry``, ``bundled``, ...).
"""
