"""The vision front ends: a vision tower, projector and pooling turning frames into video tokens
(``vision``), their frame preprocessing (``preprocess`` with PIL, ``tensor_preprocess`` batched in
torch), and the front ends of native-resolution families (``navit``, ``qwen_vl`` with its 3-D
rotary positions).

Layer: imports the shared modules, ``videolens.sources`` and ``videolens.prompting``;
``weights_conversion`` builds its front ends from here.
"""
