"""Reading a local checkpoint folder and accounting for every tensor in it.

``Weights`` wraps the checkpoint's tensors and records which ones a converter took. A converter
reads tensors by key (``take``), by prefix into a module (``load_module``), or through an
attribute tree that mirrors the HF module layout (``tree``), so TransformerLens' converters can
read ``tree.model.layers[3].self_attn.q_proj.weight`` straight from the file. At the end
``check_all_used`` raises naming every tensor nobody took, and a missing tensor raises naming its key.
TransformerLens' own loader (``load_state_dict(strict=False)``) would drop both silently.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch
from torch import nn

from videolens.errors import VideolensError

__all__ = [
    "CheckpointError",
    "MissingWeightsError",
    "UnexpectedWeightsError",
    "Weights",
    "read_config",
    "read_json_object",
    "check_config_fields",
    "materialize_meta_buffers",
    "read_state_dict",
    "require_sections",
]


class CheckpointError(VideolensError, ValueError):
    """A checkpoint folder that cannot be read as the family it claims to be."""


def require_sections(path: Path, config: dict, sections) -> None:
    """Raise CheckpointError naming ``path/config.json``, the model type and the first of
    ``sections`` (sub-configs such as ``"vision_config"``) that ``config`` lacks."""
    for key in sections:
        if key not in config:
            raise CheckpointError(f"{path}/config.json: the {config.get('model_type')} config needs {key!r}")


class MissingWeightsError(CheckpointError):
    """Tensors the family needs are absent (the message names them)."""


class UnexpectedWeightsError(CheckpointError):
    """Tensors in the checkpoint that no part of the model uses (the message names them)."""


# config.json fields that must be integers / numbers wherever they appear (top level, text_config,
# vision_config): a string or a float there would otherwise fail deep inside transformers
INT_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "vocab_size", "max_position_embeddings", "image_size", "patch_size", "head_dim", "num_frames",
              "image_token_index", "image_token_id", "video_token_index", "video_token_id")
FLOAT_FIELDS = ("rope_theta", "rms_norm_eps", "layer_norm_eps")
PAIR_FIELDS = ("image_size", "patch_size")
"""Integer fields that may also be ``[height, width]`` (InternVL's transformers config writes them so)."""
SUB_CONFIGS = ("text_config", "vision_config", "llm_config")


def check_config_fields(config: dict, where: str) -> None:
    """Type-check the size fields of a config.json dict (and its sub-configs).

    Raises:
        CheckpointError: naming the file and the field, e.g. ``config.json: text_config.hidden_size
            must be an integer, got '64' (str)``.
    """
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(config).__name__}")
    scopes = [("", config)]
    for sub in SUB_CONFIGS:
        if sub in config:
            if not isinstance(config[sub], dict):
                raise CheckpointError(f"{where}: {sub} must be an object, got {type(config[sub]).__name__}")
            scopes.append((sub + ".", config[sub]))
    for prefix, d in scopes:
        for k in INT_FIELDS:
            v = d.get(k)
            if k in PAIR_FIELDS and isinstance(v, list) and len(v) == 2:
                v = v[0] if all(isinstance(x, int) and not isinstance(x, bool) for x in v) else v
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise CheckpointError(f"{where}: {prefix}{k} must be an integer, got {v!r} ({type(v).__name__})")
        for k in FLOAT_FIELDS:
            v = d.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise CheckpointError(f"{where}: {prefix}{k} must be a number, got {v!r} ({type(v).__name__})")
    shape = config.get("pooling_shape")
    if shape is not None and not (isinstance(shape, (list, tuple)) and len(shape) == 3
                                  and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in shape)):
        raise CheckpointError(f"{where}: pooling_shape must be three positive integers [T, H, W], got {shape!r}")


def read_config(path: Path) -> dict:
    """``config.json`` of a checkpoint folder, as a dict, its size fields type-checked.

    Raises:
        FileNotFoundError: no such folder.
        CheckpointError: no config.json, not JSON, not an object, or a size field of the wrong type.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {path}")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no config.json")
    try:
        config = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {exc}") from exc
    check_config_fields(config, str(cfg_file))
    return config


def read_json_object(f: Path) -> dict:
    """A JSON object file of a checkpoint (``preprocessor_config.json``, ...).

    Raises:
        CheckpointError: not valid JSON, or not an object (the file named).
    """
    try:
        data = json.loads(Path(f).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{f} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{f}: expected a JSON object, got {type(data).__name__}")
    return data


def _load_weight_file(f: Path, device: str = "cpu") -> Dict[str, torch.Tensor]:
    """Tensors of one safetensors or torch file, read straight onto ``device`` (safetensors reads
    tensor by tensor from its memory map, so a CUDA load never holds the file in host memory).

    Raises:
        CheckpointError: the file is missing, a folder, truncated or corrupt (named in the message).
    """
    from safetensors.torch import load_file

    if not f.is_file():
        raise CheckpointError(f"{f}: expected a weights file, found " + ("a folder" if f.is_dir() else "nothing"))
    if not os.access(f, os.R_OK):
        raise CheckpointError(f"{f}: permission denied: this user cannot read the weights file")
    try:
        if f.name.endswith(".safetensors"):
            return load_file(str(f), device=str(device))
        return torch.load(f, map_location=str(device), weights_only=True)
    except Exception as exc:  # safetensors and torch raise their own types for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{f}: not a readable weights file (truncated or corrupt?): {first}") from exc


def _read_index(index: Path) -> Dict[str, str]:
    try:
        data = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{index} is not valid JSON: {exc}") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: expected an object with a 'weight_map' of tensor name -> shard file")
    return weight_map


def read_state_dict(path: Path, device: str = "cpu") -> Dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder on ``device``: ``model.safetensors``, sharded safetensors
    (``model.safetensors.index.json``), or ``pytorch_model.bin`` (sharded too).

    Raises:
        CheckpointError: no weights, an unreadable weights file or index, or a missing shard.
    """
    path = Path(path)
    index_files = [path / "model.safetensors.index.json", path / "pytorch_model.bin.index.json"]
    for index in index_files:
        if index.exists():
            weight_map = _read_index(index)
            out: Dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                f = path / shard
                if not f.exists():
                    raise CheckpointError(f"{index.name} names shard {shard}, which is missing from {path}")
                out.update(_load_weight_file(f, device))
            missing = sorted(set(weight_map) - set(out))
            if missing:
                raise MissingWeightsError(f"{index}: tensors listed but not in their shards: {missing[:20]}")
            return out
    if (path / "model.safetensors").exists():
        return _load_weight_file(path / "model.safetensors", device)
    singles = sorted(path.glob("*.safetensors"))
    if singles:
        out = {}
        for f in singles:
            out.update(_load_weight_file(f, device))
        return out
    if (path / "pytorch_model.bin").exists():
        return _load_weight_file(path / "pytorch_model.bin", device)
    raise CheckpointError(f"{path} holds no weights (model.safetensors, shards with an index, or pytorch_model.bin)")


# buffers a model derives rather than loads, and their values given one built on the meta device
DERIVED_BUFFERS = {
    "position_ids": lambda buf: torch.arange(buf.shape[-1]).expand(tuple(buf.shape)).clone(),  # CLIP, SigLIP
    "IGNORE": lambda buf: torch.tensor(-torch.inf, dtype=buf.dtype),  # TransformerLens attention
    "mask": lambda buf: torch.empty(tuple(buf.shape), dtype=buf.dtype),  # TransformerLens' placeholder mask
}


def materialize_meta_buffers(module: nn.Module, what: str = "model", error: type = CheckpointError) -> None:
    """After a model built on the meta device got the checkpoint's tensors: real values for the
    buffers it derives (``DERIVED_BUFFERS``), then a check that nothing else is left on meta.

    Raises:
        ``error`` (CheckpointError by default): parameters or buffers still on the meta device,
            named (tensors the checkpoint or converter did not provide).
    """
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.is_meta and name in DERIVED_BUFFERS:
                sub._buffers[name] = DERIVED_BUFFERS[name](buf)
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left:
        raise error(f"{what} tensors the checkpoint does not provide: {left[:10]}")


class _Tree:
    """Attribute view of the tensors under a prefix; integer children act as a list."""

    def __init__(self, weights: "Weights", prefix: str):
        self._w = weights
        self._p = prefix

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, i: int):
        return self._child(str(int(i)))

    def _child(self, name: str):
        key = f"{self._p}{name}"
        if key in self._w.tensors:
            return self._w.take(key)
        if any(k.startswith(key + ".") for k in self._w.tensors):
            return _Tree(self._w, key + ".")
        raise MissingWeightsError(f"{self._w.source}: missing tensor(s) {self._w.expected_under(key)}")


class Weights:
    """A checkpoint's tensors, with a record of which were used."""

    def __init__(self, tensors: Dict[str, torch.Tensor], source: str = "checkpoint"):
        self.tensors = dict(tensors)
        self.source = source
        self.used: set[str] = set()

    @classmethod
    def from_folder(cls, path: Path, device: str = "cpu") -> "Weights":
        """The folder's tensors, read onto ``device`` (``read_state_dict``)."""
        return cls(read_state_dict(Path(path), device), str(path))

    def rename(self, rules: Iterable[tuple[str, str]]) -> "Weights":
        """Apply regex renames (first matching rule wins) to every key; returns self."""
        rules = [(re.compile(a), b) for a, b in rules]
        renamed: Dict[str, torch.Tensor] = {}
        for k, v in self.tensors.items():
            for pat, rep in rules:
                if pat.match(k):
                    k = pat.sub(rep, k, count=1)
                    break
            renamed[k] = v
        self.tensors = renamed
        return self

    def expected_under(self, key: str) -> list[str]:
        """Names the tensors a missing module ``key`` should hold, judging by its sibling layers
        (``layers.1.mlp.up_proj`` -> ``layers.1.mlp.up_proj.weight`` when layer 0 has ``.weight``)."""
        pattern = re.compile("^" + re.sub(r"\\.\d+\\.", r"\\.\\d+\\.", re.escape(key)) + r"(\..+)?$")
        suffixes = sorted({m.group(1) or "" for k in self.tensors if (m := pattern.match(k))})
        return [key + sfx for sfx in suffixes] or [key]

    def has_prefix(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.tensors)

    def take(self, key: str) -> torch.Tensor:
        """The tensor stored under ``key`` (marked used).

        Raises:
            MissingWeightsError: no such tensor.
            CheckpointError: the tensor is not floating point (weights are).
        """
        if key not in self.tensors:
            raise MissingWeightsError(f"{self.source}: tensor {key!r} is missing")
        t = self.tensors[key]
        if not t.is_floating_point():
            raise CheckpointError(f"{self.source}: tensor {key!r} has dtype {t.dtype}, expected a floating-point weight")
        self.used.add(key)
        return t

    def check_shapes(self, module: nn.Module, prefix: str, what: str = "the config") -> None:
        """Compare every tensor under ``prefix`` with ``module``'s (a meta-device reference model
        built from config.json) and name the first checkpoint key whose shape or kind differs.

        Raises:
            CheckpointError: ``<key> has shape (..), expected (..) from <what>``.
        """
        for name, ref in module.state_dict().items():
            key = prefix + name
            t = self.tensors.get(key)
            if t is None:
                continue
            if tuple(t.shape) != tuple(ref.shape):
                raise CheckpointError(f"{self.source}: {key} has shape {tuple(t.shape)}, expected {tuple(ref.shape)} "
                                      f"from {what}")
            if ref.is_floating_point() and not t.is_floating_point():
                raise CheckpointError(f"{self.source}: tensor {key!r} has dtype {t.dtype}, expected a floating-point weight")

    def take_optional(self, key: str) -> Optional[torch.Tensor]:
        return self.take(key) if key in self.tensors else None

    def tree(self, prefix: str = "") -> _Tree:
        return _Tree(self, prefix)

    def load_module(self, module: nn.Module, prefix: str) -> None:
        """Load every parameter and persistent buffer of ``module`` from ``prefix + name``.

        Raises:
            MissingWeightsError: the module needs a tensor the checkpoint lacks.
            CheckpointError: a tensor has the wrong shape.
        """
        expected = module.state_dict()
        sd = {}
        missing = []
        for name, ref in expected.items():
            key = prefix + name
            if key not in self.tensors:
                missing.append(key)
                continue
            t = self.tensors[key]
            if tuple(t.shape) != tuple(ref.shape):
                raise CheckpointError(f"{self.source}: {key} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}")
            if ref.is_floating_point() and not t.is_floating_point():
                raise CheckpointError(f"{self.source}: tensor {key!r} has dtype {t.dtype}, expected a floating-point weight")
            sd[name] = t
            self.used.add(key)
        # buffers such as CLIP's position_ids are derived, not required
        buffers = {n for n, _ in module.named_buffers()}
        hard_missing = [k for k in missing if k[len(prefix):] not in buffers]
        if hard_missing:
            raise MissingWeightsError(f"{self.source}: missing tensors {hard_missing[:20]}" + (" ..." if len(hard_missing) > 20 else ""))
        meta = any(t.is_meta for t in module.state_dict().values())
        module.load_state_dict(sd, strict=False, assign=meta)  # a module built on the meta device takes the tensors

    def unused(self) -> list[str]:
        return sorted(set(self.tensors) - self.used)

    def check_all_used(self) -> None:
        """Raise ``UnexpectedWeightsError`` naming every tensor no converter took."""
        extra = self.unused()
        if extra:
            raise UnexpectedWeightsError(
                f"{self.source}: {len(extra)} tensor(s) are not used by the model: {extra[:20]}"
                + (" ..." if len(extra) > 20 else "")
            )

