"""Benchmarks by name: ``--data tvbench[:task,...]`` fetches the annotation files and videos of the
tasks asked for from the benchmark's public dataset repository with huggingface_hub (its cache,
offline mode and errors as for checkpoints, ``videolens.sources.hub``), unpacks archives once, and gives
each annotation file its video folder.

The table (``DATASETS``, ``videolens/assets/datasets.json``) says where each benchmark keeps its
files, as data:

- TVBench (``FunAILab/TVBench``): the layout the paper's loader reads (``json/<task>.json``, videos
  under ``video/<task>/``, or a ``video/<task>.zip`` archive).
- MVBench (``OpenGVLab/MVBench``): ``json/<task>.json``, each task's videos in a folder of its source
  dataset (``video/star/Charades_v1_480/``), the repository holding each source as one archive
  (``video/star.zip``); only the archives of the tasks asked for are fetched.
- Video-MME (``lmms-lab/Video-MME``): one parquet file, the videos in 20 zip chunks
  (``videos_chunked_*.zip``) that unpack to ``data/<videoID>.mp4``, as lmms-eval reads them.
- LongVideoBench (``longvideobench/LongVideoBench``, gated): ``lvb_val.json``, the videos one tar
  archive split in parts (``videos.tar.part.aa`` ...), read as one stream (never joined on disk).
- VCGBench (``lmms-lab/VideoChatGPT``, lmms-eval's copy of Video-ChatGPT's benchmark): a parquet file
  per task (``Generic/``, ``Temporal/``, ``Consistency/``), the videos in ``videos.zip``
  (``Test_Videos/``).
- TOMATO (``yale-nlp/TOMATO``): a parquet file per task; its videos are not on the hub (Google
  Drive), so ``--video-root`` names the folder they were unpacked into.

A task a benchmark lists as unavailable (videos not on the hub, frame folders instead of videos) is
refused with the reason. Patterns may hold globs (``*``): every match in the repository counts.

Example::

    files, roots = vl.datasets.fetch("tvbench:action_sequence,moving_direction")
    samples = load_annotation_files(files, roots)
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Dict, Iterator, List, Optional, Tuple, Union

from ..errors import VideolensError

__all__ = ["DATASETS", "Benchmark", "parse_spec", "fetch", "is_benchmark_spec", "VideosElsewhereError"]

PerTask = Union[str, Dict[str, str]]


class VideosElsewhereError(VideolensError, ValueError):
    """A benchmark whose videos are not on the hub was asked for without ``--video-root``."""


@dataclass(frozen=True)
class Benchmark:
    """One row of ``DATASETS``: where a benchmark's files sit in its hub dataset repository.

    Attributes:
        annotations: the annotation file(s) of a task: a pattern with ``{task}`` (globs allowed:
            ``data/{task}-*.parquet``), or ``{task: pattern}``.
        videos: the video folder of a task: a pattern with ``{task}``, or ``{task: folder}``; ``None``
            when the videos are not in the repository (``videos_elsewhere`` says where they are; the
            user's ``--video-root`` is then the folder).
        archives: the archive(s) holding a task's videos when its folder is not in the repository: a
            pattern with ``{videos}`` / ``{task}`` (default ``"{videos}.zip"``; globs allowed, each match
            one archive; ``.tar.part*`` matches are the parts of one tar), or ``{task: pattern}``. Each
            is unpacked once next to the snapshot into the archive's own folder; an entry that does
            not start with the video folder's first part below that folder is put under it.
        tasks: the tasks ``--data NAME`` fetches.
        unavailable: ``{task: why}``: tasks the benchmark has that cannot be fetched and run here.
        videos_elsewhere: where the videos are when ``videos`` is ``None`` (said in the error).
    """

    name: str
    hub_id: str
    format: str
    annotations: PerTask
    videos: Optional[PerTask]
    tasks: Tuple[str, ...]
    archives: PerTask = "{videos}.zip"
    unavailable: Dict[str, str] = field(default_factory=dict)
    videos_elsewhere: str = ""
    source: str = ""

    def annotation(self, task: str) -> str:
        return self.annotations[task] if isinstance(self.annotations, dict) else self.annotations.format(task=task)

    def video_folder(self, task: str) -> Optional[str]:
        if self.videos is None:
            return None
        return self.videos[task] if isinstance(self.videos, dict) else self.videos.format(task=task)

    def archive(self, task: str) -> Optional[str]:
        if self.videos is None:
            return None
        if isinstance(self.archives, dict):
            return self.archives[task]
        return self.archives.format(task=task, videos=self.video_folder(task))


def _load() -> Dict[str, Benchmark]:
    raw = json.loads((Path(__file__).resolve().parents[1] / "assets" / "datasets.json").read_text())
    return {k: Benchmark(name=k, hub_id=v["hub_id"], format=v["format"], annotations=v["annotations"],
                         videos=v["videos"], tasks=tuple(v["tasks"]), archives=v.get("archives", "{videos}.zip"),
                         unavailable=dict(v.get("unavailable", {})), videos_elsewhere=v.get("videos_elsewhere", ""),
                         source=v.get("source", ""))
            for k, v in raw.items()}


DATASETS: Dict[str, Benchmark] = _load()


def is_benchmark_spec(text: str) -> bool:
    """Whether ``--data`` names a benchmark (``tvbench`` or ``tvbench:task,...``) rather than a file."""
    return text.split(":", 1)[0].lower() in DATASETS and not Path(text).exists()


def parse_spec(text: str) -> Tuple[Benchmark, List[str]]:
    """``"tvbench:action_sequence,moving_direction"`` -> (its row, the tasks); no tasks means all.

    Raises:
        ValueError: an unknown benchmark or task (the known ones listed).
    """
    name, _, tasks = text.partition(":")
    bench = DATASETS.get(name.lower())
    if bench is None:
        raise ValueError(f"--data {text}: unknown benchmark {name!r}; known: {', '.join(DATASETS)}")
    chosen = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else list(bench.tasks)
    for t in chosen:
        if t in bench.unavailable:
            raise ValueError(f"--data {text}: {bench.name} task {t!r} cannot be fetched here: {bench.unavailable[t]}")
    unknown = [t for t in chosen if t not in bench.tasks]
    if unknown:
        raise ValueError(f"--data {text}: {bench.name} has no task(s) {unknown}; its tasks: {', '.join(bench.tasks)}")
    return bench, chosen


def fetch(text: str, revision: Optional[str] = None, cache_dir: Optional[str] = None,
          local_files_only: Optional[bool] = None, video_root: Optional[Union[str, Path]] = None,
          need_video_root: bool = True) -> Tuple[List[Path], List[Optional[Path]]]:
    """The annotation files of the tasks named by ``text`` and each file's video folder, downloaded
    into the hub cache when needed (only those tasks' files); archives are unpacked once beside the
    snapshot.

    Args:
        video_root: the folder holding the videos of a benchmark whose videos are not on the hub
            (TOMATO); refused for the others (their videos come with them).
        need_video_root: False: a benchmark whose videos are elsewhere is fetched without them, its
            folders ``None`` (``videolens download tomato``).

    Raises:
        ValueError: unknown benchmark or task (``parse_spec``); ``video_root`` given to a benchmark whose
            videos are on the hub.
        VideosElsewhereError: videos not on the hub and no ``video_root`` (says where they are).
        videolens.sources.hub.HubError: the repository cannot be reached, is gated, or lacks a task's files.
    """
    from .hub import HubError, snapshot

    bench, tasks = parse_spec(text)
    elsewhere = bench.videos is None
    if video_root is not None and not elsewhere:
        raise ValueError(f"--video-root is not used with --data {text} ({bench.name}'s videos come with it from "
                         f"{bench.hub_id}); drop it, or give annotation files")
    if elsewhere and video_root is None and need_video_root:
        raise VideosElsewhereError(f"--data {text}: {bench.name}'s videos are not on the hub: "
                                   f"{bench.videos_elsewhere}; then add --video-root DIR")
    if video_root is not None and not Path(video_root).is_dir():
        raise FileNotFoundError(f"--video-root {video_root}: no such folder")
    patterns = []
    for t in tasks:
        patterns.append(bench.annotation(t))
        if not elsewhere:
            patterns += [f"{bench.video_folder(t)}/*", bench.archive(t)]
    snap = snapshot(bench.hub_id, list(dict.fromkeys(patterns)), repo_type="dataset", revision=revision,
                    cache_dir=cache_dir, local_files_only=local_files_only, name=text)
    files, roots = [], []
    for t in tasks:
        found = sorted(p for p in snap.glob(bench.annotation(t)) if p.is_file())
        if not found:
            raise HubError(f"{bench.hub_id}: no {bench.annotation(t)} in the repository (task {t})")
        if elsewhere:
            root = Path(video_root) if video_root is not None else None
        else:
            root = _video_folder(snap, bench.video_folder(t), bench.archive(t))
        files += found
        roots += [root] * len(found)
    return files, roots


def _video_folder(snap: Path, videos: str, archive_pattern: str) -> Path:
    """``snap/videos`` when the repository holds the videos as files, else the same folder below
    ``snap/../unpacked/<commit>/``, into which the archives matching ``archive_pattern`` are unpacked
    once each (the cache's snapshots stay as huggingface_hub wrote them; a marker file per archive
    says it is done, so an interrupted unpack starts that archive again). An archive ``a/b/x.zip``
    unpacks into ``a/b/``; with ``videos = a/b/v/...``, an entry that does not start with ``v/`` goes
    under ``a/b/v/``."""
    folder = snap / videos
    if folder.is_dir():
        return folder
    base = snap.parent.parent / "unpacked" / snap.name
    for group in _archive_groups(snap, archive_pattern):
        rel = group[0].relative_to(snap)
        parent = PurePosixPath(rel.parent.as_posix())
        inside = PurePosixPath(videos).relative_to(parent) if parent != PurePosixPath(".") else PurePosixPath(videos)
        done = base / f"{_group_name(rel)}.unpacked"
        if done.exists():
            continue
        _unpack(group, base / parent, inside.parts[0])
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text("ok")
    return base / videos  # no archive either: each sample is then skipped as missing_video, named


_TAR_PART = re.compile(r"\.tar\.part[^/]*$")


def _group_name(rel: Path) -> str:
    """An archive's name for its marker: a tar split in parts is named once, after the whole tar."""
    return _TAR_PART.sub(".tar", rel.as_posix())


def _archive_groups(snap: Path, pattern: str) -> List[List[Path]]:
    """The archives matching ``pattern``, each a list of files: one file, or a tar's parts in order."""
    groups: Dict[str, List[Path]] = {}
    for f in sorted(p for p in snap.glob(pattern) if p.is_file()):
        groups.setdefault(_group_name(f.relative_to(snap)), []).append(f)
    return list(groups.values())


class _Parts:
    """The parts of a split archive read one after the other as one stream (``read`` only)."""

    def __init__(self, parts: List[Path]):
        self._parts, self._f = list(parts), None

    def read(self, n: int = -1) -> bytes:
        out = b""
        while n < 0 or len(out) < n:
            if self._f is None:
                if not self._parts:
                    break
                self._f = open(self._parts.pop(0), "rb")
            chunk = self._f.read(-1 if n < 0 else n - len(out))
            if not chunk:
                self._f.close()
                self._f = None
                continue
            out += chunk
        return out

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def _entries(group: List[Path]) -> Iterator[Tuple[str, IO[bytes]]]:
    """``(name, readable)`` of each file in an archive: a zip, or a tar (compressed or not, whole or in parts)."""
    if zipfile.is_zipfile(group[0]) and len(group) == 1:
        with zipfile.ZipFile(group[0]) as z:
            for info in z.infolist():
                if not info.is_dir():
                    with z.open(info) as f:
                        yield info.filename, f
        return
    stream = _Parts(group)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as t:
            for member in t:
                if member.isfile():
                    yield member.name, t.extractfile(member)
    except tarfile.TarError as exc:
        raise ValueError(f"{group[0]}: not a zip or tar archive videolens can read ({exc})") from None
    finally:
        stream.close()


def _unpack(group: List[Path], target: Path, top: str) -> None:
    """Write the archive's files below ``target``, each entry under ``top/`` (kept when it starts
    with it). An entry pointing outside ``target/top`` (``..``, absolute) is refused."""
    inside = (target / top).resolve()
    for name, f in _entries(group):
        name = name[2:] if name.startswith("./") else name
        rel = name if name.split("/", 1)[0] == top else f"{top}/{name}"
        out = (target / rel).resolve()
        if inside not in out.parents:
            raise ValueError(f"{group[0]}: entry {name!r} points outside the folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as dst:
            shutil.copyfileobj(f, dst)
