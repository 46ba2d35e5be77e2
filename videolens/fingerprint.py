"""Fingerprints that tie a results folder to its model and its data.

A run stores them in its records header (``videolens.running.records.RecordWriter``) and a resume compares
them: new weights saved at the same path, or other annotations with the same file names, are then
refused instead of mixing into the old results.

- ``file_digest``: size plus SHA-256 of the whole file. Hashing a 14 GB checkpoint takes seconds
  to a minute, so digests are cached by (resolved path, size, mtime, ctime, inode) in
  ``$VIDEOLENS_CACHE`` (default ``~/.cache/videolens``) ``/digests.json``: a resume does not read
  the weights again, and any write to a file (even one that keeps its size, or puts its mtime
  back) changes its ctime and so is hashed anew.
- ``model_fingerprint``: every config and weight file's digest. ``HookedVideoLLM.fingerprint``
  computes it on first use (``LazyFingerprint``): a run that writes records pays the hash once per
  file, loading a model in a notebook never does.
- ``quick_identity``: config.json's hash and each weight file's size plus its first and last MiB:
  cheap enough for every load, enough to tell another checkpoint apart (the warning on an input
  prepared by other weights), not a run's fingerprint.
- ``data_fingerprint``: each annotation file's digest, and the video root.
- ``video_stamp``: a video file's size and modification time, stored with each sample's records
  (``videolens.running.records.RecordWriter``) so a video replaced under the same name reruns its sample.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

__all__ = ["file_digest", "model_fingerprint", "data_fingerprint", "video_stamp", "cache_dir", "WEIGHT_SUFFIXES",
           "FINGERPRINT_METHOD", "quick_identity", "LazyFingerprint"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
FINGERPRINT_METHOD = "sha256 of every whole file"
"""What a digest covers; run headers store it beside the fingerprints."""
_CACHE_NAME = "digests.json"
_MEMORY: Dict[str, str] = {}
_PROGRESS_BYTES = 1 << 30  # files above 1 GiB show a progress bar while hashed


def cache_dir() -> Path:
    """``$VIDEOLENS_CACHE``, else ``$XDG_CACHE_HOME/videolens``, else ``~/.cache/videolens``."""
    if os.environ.get("VIDEOLENS_CACHE"):
        return Path(os.environ["VIDEOLENS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "videolens"


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def _sha256(path: Path, size: int) -> str:
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"fingerprint {path.name}",
                                     disable=size < _PROGRESS_BYTES, file=sys.stderr, leave=False) as bar:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()[:16]


def _cached(key: str) -> Optional[str]:
    if key in _MEMORY:
        return _MEMORY[key]
    try:
        return json.loads((cache_dir() / _CACHE_NAME).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _remember(key: str, digest: str) -> None:
    """Store a digest in the cache file (under its lock); an unwritable cache is only slower."""
    from filelock import FileLock

    _MEMORY[key] = digest
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / (_CACHE_NAME + ".lock")), timeout=10):
            try:
                table = json.loads((folder / _CACHE_NAME).read_text())
                table = table if isinstance(table, dict) else {}
            except (OSError, ValueError):
                table = {}
            path = key.split("|", 1)[0] + "|"
            table = {k: v for k, v in table.items() if not k.startswith(path)}  # one entry a file: its newest
            table[key] = digest
            tmp = folder / f"{_CACHE_NAME}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(table))
            os.replace(tmp, folder / _CACHE_NAME)
    except Exception:  # read-only home, full disk, lock timeout: the digest is still right, only not kept
        pass


def file_digest(path: Union[str, os.PathLike]) -> str:
    """``"<size>:<sha256 prefix>"`` of the whole file (cached; see the module's docstring).

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    key = _key(path)
    digest = _cached(key)
    if digest is None:
        with _hashing_lock(key):  # torchrun ranks loading one checkpoint: one reads it, the others wait
            digest = _cached(key) or f"{path.stat().st_size}:{_sha256(path, path.stat().st_size)}"
        _remember(key, digest)
    return digest


def _hashing_lock(key: str):
    """A file lock for hashing one file (no lock when the cache folder cannot be written)."""
    from contextlib import nullcontext

    from filelock import FileLock

    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return nullcontext()
    if not os.access(folder, os.W_OK):
        return nullcontext()
    return FileLock(str(folder / f"hashing-{hashlib.sha1(key.encode()).hexdigest()[:16]}.lock"), timeout=3600)


def video_stamp(path: Union[str, os.PathLike, None]) -> Optional[str]:
    """``"<size>:<mtime ns>"`` of a video file, or None for frames in memory or a missing file."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def model_fingerprint(folder: Union[str, os.PathLike]) -> Dict[str, str]:
    """``{file name: digest}`` (``file_digest``: whole files) for config.json, shard indexes and every
    weight file of a checkpoint."""
    return {f.name: file_digest(f) for f, _ in _checkpoint_files(folder)}


def _checkpoint_files(folder: Union[str, os.PathLike]):
    """``(file, is_weights)`` for config.json, shard indexes and weight files of a checkpoint, sorted."""
    for f in sorted(Path(folder).iterdir()):
        if f.is_file() and (f.name == "config.json" or f.name.endswith(".index.json")):
            yield f, False
        elif f.is_file() and f.name.endswith(WEIGHT_SUFFIXES):
            yield f, True


def quick_identity(folder: Union[str, os.PathLike]) -> Dict[str, str]:
    """``{file name: digest}``: config.json's full hash, each weight file's size and SHA-256 of its
    first and last MiB (see the module docstring: an identity, not a fingerprint)."""
    out = {}
    for f, weights in _checkpoint_files(folder):
        if not weights:
            out[f.name] = file_digest(f)
        else:
            size, h = f.stat().st_size, hashlib.sha256()
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(size - (1 << 20))
                    h.update(fh.read(1 << 20))
            out[f.name] = f"{size}:{h.hexdigest()[:16]}"
    return out


class LazyFingerprint:
    """A model attribute holding ``model_fingerprint(model.checkpoint_path)``, computed on first read
    (None for a model built in memory); assigning a value sets it."""

    def __get__(self, model, owner=None):
        if model is None:
            return self
        if "_fingerprint" not in model.__dict__:
            path = model.__dict__.get("checkpoint_path")
            model.__dict__["_fingerprint"] = model_fingerprint(path) if path else None
        return model.__dict__["_fingerprint"]

    def __set__(self, model, value) -> None:
        model.__dict__["_fingerprint"] = value


def data_fingerprint(files: Sequence[Union[str, os.PathLike]], video_root: Union[str, os.PathLike, None]) -> Dict:
    """``{"files": {resolved path: digest}, "video_root": resolved path}`` of a dataset's annotations."""
    return {"files": {os.path.abspath(f): file_digest(f) for f in files},
            "video_root": str(Path(video_root).resolve()) if video_root is not None else None}
