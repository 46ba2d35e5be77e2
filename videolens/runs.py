"""Resumable JSONL records for dataset runs.

One line per record, written and flushed (fsync) as each sample finishes, so a run killed at any
moment keeps every finished sample. A sample counts as finished when its ``done`` marker line is
written after its records; on restart, records of unfinished samples are ignored and a trailing
partial line (from a kill mid-write) is cut off before appending.

Example::

    with RecordWriter(out / "records.jsonl", run_config) as w:
        for sample in samples:
            if w.is_done(sample.sample_id):
                continue
            w.write_sample(sample.sample_id, records)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional

from .errors import VideolensError

__all__ = ["RecordWriter", "read_records", "read_statuses", "RunConfigMismatch"]


class RunConfigMismatch(VideolensError, ValueError):
    """The output folder holds a run made with other settings."""


def _clean_tail(path: Path) -> None:
    """Cut a trailing partial line (no final newline) left by a kill mid-write."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        f.seek(cut)
        f.truncate()


def _rows(path: Path) -> Iterator[Dict[str, Any]]:
    """Parsed lines of a records file; partial or corrupt lines are skipped."""
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def read_statuses(path: Path | str) -> Dict[str, str]:
    """sample_id -> status ("ok", "missing_video", ...) of every finished sample."""
    return {r["sample_id"]: r.get("status", "ok") for r in _rows(Path(path)) if r.get("_done")}


def read_records(path: Path | str, include_unfinished: bool = False) -> List[Dict[str, Any]]:
    """Records of finished samples (marker lines dropped); partial or corrupt lines are skipped."""
    rows, done = [], set()
    for row in _rows(Path(path)):
        if row.get("_done"):
            done.add(row["sample_id"])
        elif not row.get("_run"):
            rows.append(row)
    if include_unfinished:
        return rows
    return [r for r in rows if r.get("sample_id") in done]


class RecordWriter:
    """Append-only JSONL writer with per-sample completion markers.

    Args:
        path: the JSONL file.
        run_config: settings of the run (model, target, window, ...); stored in the first line
            and checked on resume: a different config raises ``RunConfigMismatch`` rather than
            mixing runs.
    """

    def __init__(self, path: Path | str, run_config: Optional[Dict[str, Any]] = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run_config = run_config or {}
        _clean_tail(self.path)
        self.done: set[str] = set()
        header = None
        for row in _rows(self.path):
            if row.get("_run"):
                header = row.get("config", {})
            elif row.get("_done"):
                self.done.add(row["sample_id"])
        if header is not None and run_config is not None and header != json.loads(json.dumps(run_config)):
            raise RunConfigMismatch(
                f"{self.path} was written by a run with other settings ({header}); use another --out "
                f"or delete it (this run: {run_config})"
            )
        self._drop_unfinished()
        self._f = open(self.path, "a")
        if header is None:
            self._write({"_run": True, "config": self.run_config})

    def _drop_unfinished(self) -> None:
        """Rewrite the file without records of samples that have no done marker (atomic replace)."""
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        keep, dropped = [], False
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped = True
                continue
            if row.get("_run") or row.get("_done") or row.get("sample_id") in self.done:
                keep.append(line)
            else:
                dropped = True
        if dropped:
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text("".join(l + "\n" for l in keep))
            os.replace(tmp, self.path)

    def _write(self, row: Dict[str, Any]) -> None:
        self._f.write(json.dumps(row) + "\n")

    def is_done(self, sample_id: str) -> bool:
        return sample_id in self.done

    def write_sample(self, sample_id: str, records: Iterable[Dict[str, Any]], status: str = "ok") -> None:
        """Write all records of one sample, then its done marker, and flush to disk."""
        for r in records:
            self._write({"sample_id": sample_id, **r})
        self._write({"_done": True, "sample_id": sample_id, "status": status})
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.add(sample_id)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def records(self) -> List[Dict[str, Any]]:
        self._f.flush()
        return read_records(self.path)
