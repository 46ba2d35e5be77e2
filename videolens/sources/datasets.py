"""Benchmarks by name: ``--data tvbench[:task,...]`` fetches the annotation files and videos of the
tasks asked for from the benchmark's public dataset repository with huggingface_hub (its cache,
offline mode and errors as for checkpoints, ``videolens.sources.hub``), unpacks archives once, and gives
each annotation file its video folder.

The table (``DATASETS``, ``videolens/assets/datasets.json``) says where each benchmark keeps its
files: TVBench's layout is the one the paper's loader reads (``json/<task>.json``, videos under
``video/<task>/``); MVBench's the one the paper's MVBench loader reads (``json/<task>.json``, each
task's videos in a folder of its source dataset, e.g. ``video/star/Charades_v1_480/``, the hub
repository holding each source as one archive, ``video/star.zip``). A task a benchmark lists as
unavailable (videos not on the hub, or frame folders instead of videos) is refused with the reason.

Example::

    files, roots = vl.datasets.fetch("tvbench:action_sequence,moving_direction")
    samples = load_annotation_files(files, roots)
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

__all__ = ["DATASETS", "Benchmark", "parse_spec", "fetch", "is_benchmark_spec"]


@dataclass(frozen=True)
class Benchmark:
    """One row of ``DATASETS``: where a benchmark's files sit in its hub dataset repository.

    Attributes:
        annotations: the annotation file, a pattern with ``{task}``.
        videos: the video folder: a pattern with ``{task}``, or ``{task: folder}``.
        archives: the archive holding a task's videos when the folder is not in the repository: a
            pattern with ``{videos}`` / ``{task}`` (default ``"{videos}.zip"``), or ``{task: archive}``;
            unpacked once next to the snapshot, into the archive's own folder.
        tasks: the tasks ``--data NAME`` fetches.
        unavailable: ``{task: why}``: tasks the benchmark has that cannot be fetched and run here.
    """

    name: str
    hub_id: str
    format: str
    annotations: str
    videos: Union[str, Dict[str, str]]
    tasks: Tuple[str, ...]
    archives: Union[str, Dict[str, str]] = "{videos}.zip"
    unavailable: Dict[str, str] = field(default_factory=dict)
    source: str = ""

    def video_folder(self, task: str) -> str:
        return self.videos[task] if isinstance(self.videos, dict) else self.videos.format(task=task)

    def archive(self, task: str) -> str:
        if isinstance(self.archives, dict):
            return self.archives[task]
        return self.archives.format(task=task, videos=self.video_folder(task))


def _load() -> Dict[str, Benchmark]:
    raw = json.loads((Path(__file__).resolve().parents[1] / "assets" / "datasets.json").read_text())
    return {k: Benchmark(name=k, hub_id=v["hub_id"], format=v["format"], annotations=v["annotations"],
                         videos=v["videos"], tasks=tuple(v["tasks"]), archives=v.get("archives", "{videos}.zip"),
                         unavailable=dict(v.get("unavailable", {})), source=v.get("source", ""))
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
          local_files_only: Optional[bool] = None) -> Tuple[List[Path], List[Path]]:
    """The annotation files of the tasks named by ``text`` and each file's video folder, downloaded
    into the hub cache when needed (only those tasks' files); a ``<videos>.zip`` archive is unpacked
    once beside the snapshot.

    Raises:
        ValueError: unknown benchmark or task (``parse_spec``).
        videolens.sources.hub.HubError: the repository cannot be reached, is gated, or lacks a task's files.
    """
    from .hub import HubError, snapshot

    bench, tasks = parse_spec(text)
    patterns = []
    for t in tasks:
        videos = bench.video_folder(t)
        patterns += [bench.annotations.format(task=t), f"{videos}/*", bench.archive(t)]
    snap = snapshot(bench.hub_id, list(dict.fromkeys(patterns)), repo_type="dataset", revision=revision,
                    cache_dir=cache_dir, local_files_only=local_files_only, name=text)
    files, roots = [], []
    for t in tasks:
        ann = snap / bench.annotations.format(task=t)
        if not ann.is_file():
            raise HubError(f"{bench.hub_id}: no {bench.annotations.format(task=t)} in the repository (task {t})")
        files.append(ann)
        roots.append(_video_folder(snap, bench.video_folder(t), bench.archive(t)))
    return files, roots


def _video_folder(snap: Path, videos: str, archive_path: str) -> Path:
    """``snap/videos`` when the repository holds the videos as files, else the folder inside its
    archive, unpacked once into ``snap/../unpacked/<commit>/`` (the cache's snapshots stay as
    huggingface_hub wrote them). An archive ``a/b/name.zip`` unpacks into ``a/b/``; entries that do not
    start with ``name/`` go under ``a/b/name/``."""
    folder = snap / videos
    if folder.is_dir():
        return folder
    archive = snap / archive_path
    if not archive.is_file():
        return folder  # no videos: each sample is then skipped as missing_video, named
    base = snap.parent.parent / "unpacked" / snap.name
    stem = Path(archive_path).with_suffix("")
    target = base / stem.parent
    done = base / f"{stem}.unpacked"
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            prefix = stem.name + "/"
            keep = all(n.startswith(prefix) for n in names if n.strip("/"))
            for n in names:
                rel = n if keep else prefix + n
                if rel.endswith("/"):
                    continue
                out = (target / rel).resolve()
                if (target / stem.name).resolve() not in out.parents:
                    raise ValueError(f"{archive}: entry {n!r} points outside the folder")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(z.read(n))
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text("ok")
    return base / videos
