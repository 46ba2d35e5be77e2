"""Dataset sweeps sharded over processes with ``torch.distributed`` (``torchrun``).

``torchrun --nproc-per-node K -m videolens flow ...`` (or ``pathways``, ``lens``, ``genprob``) starts K
ranks. Rank ``r`` loads its own model (on ``cuda:<LOCAL_RANK>`` when CUDA is there, gloo on CPU),
runs every K-th sample (``samples[r::K]``) into ``OUT/ranks/rank<r>/`` with the usual resumable
JSONL records and folder lock, and waits for the others; rank 0 then merges every rank's records
into ``OUT`` in the order of the data (``merge_records``), the same file a one-process run writes,
and draws the figures. A rerun resumes each rank's own file, and the merge skips samples already
merged. One process (no ``WORLD_SIZE``) runs as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch

__all__ = ["world", "init", "finish", "shard", "rank_folder", "barrier", "merge_records", "rank_device"]

T = TypeVar("T")


def world() -> Tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment; ``(0, 1)`` without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init() -> None:
    """Join the process group (nccl with CUDA, gloo otherwise) when run under torchrun."""
    import torch.distributed as dist

    if world()[1] > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def finish() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rank_device(device: Optional[str]) -> Optional[str]:
    """``cuda:<LOCAL_RANK>`` for a sharded run on CUDA (``--device`` unset or ``cuda``), else ``device``."""
    if world()[1] > 1 and torch.cuda.is_available() and device in (None, "cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def shard(samples: Sequence[T]) -> List[T]:
    """This rank's samples: every ``world``-th one from its rank."""
    rank, size = world()
    return list(samples)[rank::size]


def rank_folder(out: Path) -> Path:
    """Where this rank writes: ``out`` itself in a one-process run, ``out/ranks/rank<r>`` otherwise."""
    rank, size = world()
    return Path(out) if size == 1 else Path(out) / "ranks" / f"rank{rank}"


def merge_records(out: Path, name: str, sample_ids: Sequence[str], config: Optional[Dict[str, Any]] = None
                  ) -> List[Dict[str, Any]]:
    """Rank 0, after the ranks finished: every ``out/ranks/rank*/<name>`` into ``out/<name>`` (a
    ``RecordWriter`` file: header, then each sample's records and done marker in ``sample_ids``'
    order). Samples already merged are kept. Returns the merged records of ``sample_ids``.

    Raises:
        videolens.running.records.RunConfigMismatch: ``out/<name>`` holds a run with another config.
    """
    import json

    from .records import RecordWriter, read_records

    parts: Dict[str, Tuple[List[dict], dict]] = {}
    for f in sorted((Path(out) / "ranks").glob(f"rank*/{name}")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        records: Dict[str, List[dict]] = {}
        for row in rows:
            if row.get("_run"):
                continue
            if row.get("_done"):
                parts[row["sample_id"]] = (records.pop(row["sample_id"], []), row)
            else:
                records.setdefault(row["sample_id"], []).append({k: v for k, v in row.items() if k != "sample_id"})
    with RecordWriter(Path(out) / name, config, retry_skipped=True) as w:
        for sid in sample_ids:
            if sid in parts and not w.is_done(sid, video_stamp=parts[sid][1].get("video_stamp")):
                recs, marker = parts[sid]
                w.write_sample(sid, recs, status=marker.get("status", "ok"), message=marker.get("message"),
                               video_stamp=marker.get("video_stamp"))
    wanted = set(sample_ids)
    return [r for r in read_records(Path(out) / name) if r.get("sample_id") in wanted]
