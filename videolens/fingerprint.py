"""Fingerprints that tie a results folder to its model and its data.

A run stores them in its records header (``videolens.runs.RecordWriter``) and a resume compares
them: new weights saved at the same path, or other annotations with the same file names, are then
refused instead of mixing into the old results.

- ``file_digest``: size plus SHA-256 of the first and last MiB; cheap on multi-GB shards and it
  changes whenever a file is rewritten with other tensors (safetensors headers sit at the start).
- ``model_fingerprint``: ``config.json``'s full hash and every weight file's digest.
- ``data_fingerprint``: each annotation file's full hash, and the video root.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, Sequence, Union

__all__ = ["file_digest", "model_fingerprint", "data_fingerprint", "WEIGHT_SUFFIXES"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_EDGE = 1 << 20  # bytes hashed at each end of a weight file


def file_digest(path: Union[str, os.PathLike], full: bool = False) -> str:
    """``"<size>:<sha256 prefix>"`` of a file: the whole file when ``full``, else its first and
    last MiB (with the size, enough to tell rewritten weights apart at no real cost)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if full or size <= 2 * _EDGE:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(_EDGE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))
    return f"{size}:{h.hexdigest()[:16]}"


def model_fingerprint(folder: Union[str, os.PathLike]) -> Dict[str, str]:
    """``{file name: digest}`` for config.json (full hash) and every weight file of a checkpoint."""
    folder = Path(folder)
    out = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.name == "config.json" or f.name.endswith(".index.json")):
            out[f.name] = file_digest(f, full=True)
        elif f.is_file() and f.name.endswith(WEIGHT_SUFFIXES):
            out[f.name] = file_digest(f)
    return out


def data_fingerprint(files: Sequence[Union[str, os.PathLike]], video_root: Union[str, os.PathLike, None]) -> Dict:
    """``{"files": {resolved path: digest}, "video_root": resolved path}`` of a dataset's annotations."""
    return {"files": {str(Path(f).resolve()): file_digest(f, full=True) for f in files},
            "video_root": str(Path(video_root).resolve()) if video_root is not None else None}
