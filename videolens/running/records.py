"""Resumable JSONL records for dataset runs.

One line per record, written and flushed (fsync) as each sample finishes, so a run killed at any
moment keeps every finished sample. A sample counts as finished when its ``done`` marker line is
written after its records; on restart, records of unfinished samples are ignored and a trailing
partial line (from a kill mid-write) is cut off before appending.

A writer holds the folder's lock (``folder_lock``) while it is open, so two runs never write one
file; its header stores the run's settings and fingerprints (``videolens.fingerprint``) and a
resume with others is refused, naming what differs. Samples recorded as skipped (missing video,
unreadable file, invalid entry) are run again on resume unless ``retry_skipped=False``; a sample
whose records hold NaN or infinite numbers is recorded with status ``"non_finite"``, never scored.

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
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..errors import VideolensError, non_finite_fields as _non_finite_fields

__all__ = ["RecordWriter", "read_records", "read_statuses", "RunConfigMismatch", "FolderInUseError", "folder_lock",
           "is_skip_status", "config_differences",
           "RecordsDamagedWarning", "VideoChangedWarning"]


class RunConfigMismatch(VideolensError, ValueError):
    """The output folder holds a run made with other settings, model or data."""


class FolderInUseError(VideolensError, RuntimeError):
    """Another process is writing into the output folder."""


class RecordsDamagedWarning(UserWarning):
    """A records file holds damaged lines inside finished samples; those samples run again."""


class VideoChangedWarning(UserWarning):
    """A finished sample's video file changed since it ran; the sample runs again."""


LOCK_NAME = ".videolens.lock"
_LOCKS: Dict[str, Any] = {}


@contextmanager
def folder_lock(folder: Path | str, what: str = "videolens"):
    """Hold an exclusive lock on ``folder`` (created if needed) for the ``with`` block.

    The lock is ``filelock.FileLock`` on ``folder/.videolens.lock`` (an OS lock: it goes away with
    the process, even one killed with SIGKILL); re-entrant within one process, so a command and the
    record writers it opens share it. ``folder/.videolens.lock.json`` names the holder.

    Raises:
        FolderInUseError: another process holds it (``runs/x is in use by process N (started ...)``).
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    lock = _LOCKS.setdefault(key, FileLock(str(folder / LOCK_NAME)))
    info = folder / (LOCK_NAME + ".json")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            holder = json.loads(info.read_text())
            who = f"process {holder['pid']} (started {holder['started']}, {holder['what']})"
        except (OSError, ValueError, KeyError):
            who = "another process"
        raise FolderInUseError(f"{folder} is in use by {who}; wait for it to finish or choose another --out") from None
    try:
        if lock.lock_counter == 1:
            info.write_text(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                        "what": what}))
        yield folder
    finally:
        lock.release()


def is_skip_status(status: str) -> bool:
    """Statuses of samples that were not analysed because something was missing or unreadable
    (``missing_video``, ``error``, ``skipped: ...``); retried on resume by default."""
    return status in ("missing_video", "error") or status.startswith("skipped")


def config_differences(old: Any, new: Any, prefix: str = "") -> List[str]:
    """``["model_fingerprint.model.safetensors: was '1:ab', now '1:cd'", ...]`` between two configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(old) + [k for k in new if k not in old]:
            name = f"{prefix}{k}"
            if k not in new:
                out.append(f"{name}: was {old[k]!r}, absent now")
            elif k not in old:
                out.append(f"{name}: absent before, now {new[k]!r}")
            else:
                out.extend(config_differences(old[k], new[k], name + "."))
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: was {old!r}, now {new!r}"]


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


def _parse(line: str) -> Optional[Dict[str, Any]]:
    """A records line as its row, or None when it is damaged (not JSON, or not a header/sample row)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if isinstance(row, dict) and (row.get("_run") or isinstance(row.get("sample_id"), str)):
        return row
    return None


def _scan(path: Path) -> Tuple[List[Dict[str, Any]], set]:
    """Parsed rows of a records file, and the samples owning a damaged line: a line that is not a
    JSON object belongs to the sample of the row before it, unless that row ended its sample (a
    done marker, or the header), in which case to the sample of the row after it."""
    rows: List[Dict[str, Any]] = []
    damaged: set = set()
    pending = False
    if not path.exists():
        return rows, damaged
    for line in path.read_text().splitlines():
        row = _parse(line)
        if row is None:
            prev = rows[-1] if rows else None
            if prev is not None and not prev.get("_done") and not prev.get("_run"):
                damaged.add(prev["sample_id"])
            else:
                pending = True
            continue
        if pending and not row.get("_run"):
            damaged.add(row["sample_id"])
        pending = False
        rows.append(row)
    return rows, damaged


def _finished_rows(path: Path) -> Tuple[List[Dict[str, Any]], set]:
    """Rows of a records file and its finished samples; a finished sample with a damaged line counts
    as unfinished (``RecordsDamagedWarning``), so its remaining records are never read as whole."""
    rows, damaged = _scan(path)
    done = {r["sample_id"] for r in rows if r.get("_done")}
    if damaged & done:
        warnings.warn(f"{path}: damaged line(s) in finished sample(s) {sorted(damaged & done)[:5]}; left out "
                      f"(a resume runs them again)", RecordsDamagedWarning, stacklevel=3)
    return rows, done - damaged


def read_statuses(path: Path | str) -> Dict[str, str]:
    """sample_id -> status ("ok", "missing_video", "non_finite", ...) of every finished sample."""
    rows, done = _finished_rows(Path(path))
    return {r["sample_id"]: r.get("status", "ok") for r in rows if r.get("_done") and r["sample_id"] in done}


def read_records(path: Path | str, include_unfinished: bool = False) -> List[Dict[str, Any]]:
    """Records of finished samples (marker lines dropped). Damaged lines are skipped, and a finished
    sample holding one is left out with a ``RecordsDamagedWarning`` (never read with records missing)."""
    rows, done = _finished_rows(Path(path))
    rows = [r for r in rows if not r.get("_done") and not r.get("_run")]
    if include_unfinished:
        return rows
    return [r for r in rows if r.get("sample_id") in done]


class RecordWriter:
    """Append-only JSONL writer with per-sample completion markers, holding the folder's lock.

    Args:
        path: the JSONL file.
        run_config: settings of the run (model and its fingerprint, data fingerprint, target,
            window, ...); stored in the first line and checked on resume: a different config
            raises ``RunConfigMismatch`` naming the differences rather than mixing runs.
        retry_skipped: on resume, run again the samples recorded with a skip status
            (``is_skip_status``: missing video, unreadable file, invalid entry); False keeps them.

    Raises:
        FolderInUseError: another process writes into the folder.
        RunConfigMismatch: the file holds a run with another config.
    """

    def __init__(self, path: Path | str, run_config: Optional[Dict[str, Any]] = None, retry_skipped: bool = True):
        from ..fingerprint import FINGERPRINT_METHOD

        self.path = Path(path)
        self.run_config = dict(run_config or {})
        if "model_fingerprint" in self.run_config:  # what its digests cover, so a change of method reads as one
            self.run_config.setdefault("fingerprint_method", FINGERPRINT_METHOD)
        self._lock = folder_lock(self.path.parent, what=str(self.run_config.get("command", "videolens run")))
        self._lock.__enter__()
        self._f = None
        self.stamps: Dict[str, str] = {}
        try:
            self._open(self.run_config if run_config is not None else None, retry_skipped)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def _open(self, run_config, retry_skipped: bool) -> None:
        _clean_tail(self.path)
        statuses: Dict[str, str] = {}
        header = None
        rows, damaged = _scan(self.path)
        for row in rows:
            if row.get("_run"):
                header = row.get("config", {})
            elif row.get("_done"):
                statuses[row["sample_id"]] = row.get("status", "ok")
                if row.get("video_stamp") is not None:
                    self.stamps[row["sample_id"]] = row["video_stamp"]
        if damaged and header is None:
            raise RunConfigMismatch(f"{self.path}: its first line (the run's settings) is damaged, so a resume cannot "
                                    f"tell which run it holds; choose a new --out folder, or delete {self.path}")
        if header is not None and run_config is not None:
            diff = config_differences(header, json.loads(json.dumps(run_config)))
            if diff:
                raise RunConfigMismatch(
                    f"{self.path} holds a run with other settings ({'; '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}); "
                    f"choose a new --out folder, or delete {self.path} to start over")
        self.damaged = sorted(damaged & set(statuses))
        if self.damaged:
            warnings.warn(f"{self.path}: damaged line(s) in the records of {len(self.damaged)} finished sample(s) "
                          f"({', '.join(self.damaged[:5])}{' ...' if len(self.damaged) > 5 else ''}); "
                          f"they will be run again", RecordsDamagedWarning, stacklevel=3)
        self.done: set[str] = {k for k, v in statuses.items()
                               if not (retry_skipped and is_skip_status(v)) and k not in damaged}
        self.retried = sorted(set(statuses) - self.done)
        self._drop_unfinished()
        self._f = open(self.path, "a")
        if header is None:
            self._write({"_run": True, "config": self.run_config})

    def _drop_unfinished(self) -> None:
        """Rewrite the file without the lines of samples not in ``done`` (unfinished, or retried
        skips: records and markers), atomically."""
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        keep, dropped = [], False
        for line in lines:
            row = _parse(line)
            if row is not None and (row.get("_run") or row.get("sample_id") in self.done):
                keep.append(line)
            else:
                dropped = True
        if dropped:
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text("".join(l + "\n" for l in keep))
            os.replace(tmp, self.path)

    def _write(self, row: Dict[str, Any]) -> None:
        self._f.write(json.dumps(row) + "\n")

    def is_done(self, sample_id: str, video_stamp: Optional[str] = None) -> bool:
        """Whether ``sample_id`` finished earlier; given the video's current ``video_stamp``
        (``videolens.fingerprint.video_stamp``), a sample whose video changed since is not done: its
        old lines are removed (it will be run again) and a ``VideoChangedWarning`` says so."""
        if sample_id not in self.done:
            return False
        old = self.stamps.get(sample_id)
        if video_stamp is None or old is None or old == video_stamp:
            return True
        warnings.warn(f"{sample_id}: its video changed since it was run (size:mtime {old} -> {video_stamp}); "
                      f"running it again", VideoChangedWarning, stacklevel=2)
        self.done.discard(sample_id)
        self._f.close()
        self._drop_unfinished()
        self._f = open(self.path, "a")
        return False

    def write_sample(self, sample_id: str, records: Iterable[Dict[str, Any]], status: str = "ok",
                     message: Optional[str] = None, video_stamp: Optional[str] = None) -> str:
        """Write all records of one sample, then its done marker, and flush to disk.

        Records holding NaN or infinite numbers are not written: the sample gets status
        ``"non_finite"`` and a message naming the fields, so no summary scores it.

        Returns:
            the status written.
        """
        records = list(records)
        bad = _non_finite_fields(records)
        if bad:
            status, message, records = "non_finite", f"non-finite values in {', '.join(bad[:8])}", []
        for r in records:
            self._write({"sample_id": sample_id, **r})
        marker = {"_done": True, "sample_id": sample_id, "status": status}
        if message:
            marker["message"] = message
        if video_stamp is not None:
            marker["video_stamp"] = self.stamps[sample_id] = video_stamp
        self._write(marker)
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.add(sample_id)
        return status

    def close(self) -> None:
        if self._f is not None and not self._f.closed:
            self._f.close()
            self._lock.__exit__(None, None, None)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def records(self) -> List[Dict[str, Any]]:
        self._f.flush()
        return read_records(self.path)
