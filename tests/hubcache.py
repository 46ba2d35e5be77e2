"""A huggingface_hub cache written by hand in the library's own layout (``models--org--name/``:
``blobs/<sha256>``, ``snapshots/<commit>/<file>`` symlinks into ``blobs``, ``refs/<branch>``), so
tests resolve hub ids offline through huggingface_hub's real code."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def write_hub_cache(cache: Path, repo_id: str, folder: Path, revision: str = "main", commit: str = "a" * 40,
                    skip=()) -> Path:
    """Lay ``folder``'s files out as the cached snapshot ``commit`` of ``repo_id`` (``revision``
    pointing at it); ``skip`` leaves files out. Returns the snapshot folder."""
    org, name = repo_id.split("/")
    repo = Path(cache) / f"models--{org}--{name}"
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    for f in sorted(Path(folder).iterdir()):
        if not f.is_file() or f.name in skip:
            continue
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(f, blob)
        link = snap / f.name
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(blob, snap), link)
    return snap
