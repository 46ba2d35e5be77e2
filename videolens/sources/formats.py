"""Annotation file formats: which loader reads a file, picked from its content or by name.

``FORMATS`` maps a format name to its loader and a test of a parsed file. ``load_annotations``
reads one file in any registered format (``format="auto"`` detects it); a file in no known format
gets one error naming the fields each format expects.

- ``tvbench``: MVBench / TVBench, a JSON list of ``{video, question, candidates, answer}``
  (``videolens.sources.data.load_tvbench``).
- ``tomato``: TOMATO (Shangguan et al. 2024), a JSON object keyed by entry number, each entry
  ``{question, options, answer (an index into options), key, demonstration_type, motion_type}``,
  or the same entries as rows (the hub's parquet files, ``data/<task>-00000-of-00001.parquet``,
  keyed by row number); the video is ``<video_root>/<demonstration_type>/<key>.mp4`` and the task is
  named after the file as the official loader names it (``count.json`` -> ``Count``; map-the-flow
  ``tasks/eval/tomato/__init__.py``; the hub's ``shape_trend`` -> ``ShapeTrend``). Its question
  block (``Question: ...\\nOptions:\\n(A) ...``) is the one videolens writes for every
  multiple-choice sample.
- ``longvideobench``: LongVideoBench (``load_longvideobench``), with its own frame sampling.
- ``videomme``: Video-MME (``load_videomme``), its parquet file (``videomme/test-00000-of-00001.parquet``)
  or the same rows as a JSON list; options shown as written (``A. text``).
- ``vcgbench``: VCGBench (Video-ChatGPT's benchmark, ``load_vcgbench``), open-ended questions, in
  Video-ChatGPT's JSON or lmms-eval's parquet rows.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from .data import AnnotationError, VideoQA, check_entry, check_times, claim_id, load_tvbench, read_annotation_json
from ..registry import Registry

__all__ = ["AnnotationFormat", "FORMATS", "load_annotations", "load_annotation_files", "detect_format", "load_tomato",
           "load_longvideobench", "load_videomme", "load_vcgbench", "TOMATO_TASKS"]

PathLike = Union[str, os.PathLike]

TOMATO_TASKS = {"count": "Count", "direction": "Direction", "rotation": "Rotation", "shape&trend": "ShapeTrend",
                "velocity&frequency": "VelocityFrequency", "visual_cues": "VisualCues",
                "shape_trend": "ShapeTrend", "velocity_frequency": "VelocityFrequency"}
"""File stem (the GitHub repository's JSON files, then the hub's parquet splits) -> the official
loader's task name (``data_list_info``)."""

_SHARD = re.compile(r"-\d{5}-of-\d{5}$")


def file_task(path: Path) -> str:
    """The task a file's name gives: its stem without ``_sample`` and without a parquet shard
    suffix (``count-00000-of-00001`` -> ``count``)."""
    return _SHARD.sub("", path.stem).replace("_sample", "")


@dataclass(frozen=True)
class AnnotationFormat:
    """One annotation format: ``load(path, video_root) -> [VideoQA]``, ``matches(parsed JSON)``,
    and ``fields``, the shape an entry must have (said when a file matches no format);
    ``detectable`` False: chosen by name only (``--format``), never detected."""

    name: str
    load: Callable[[Path, PathLike], List[VideoQA]]
    matches: Callable[[Any], bool]
    fields: str
    detectable: bool = True


def _tvbench_matches(data) -> bool:  # its loader names any entry lacking a field
    return isinstance(data, list) and not any(m(data) for m in (_longvideobench_matches, _videomme_matches,
                                                                  _vcgbench_matches, _tomato_matches))


def _longvideobench_matches(data) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and \
        {"video_path", "correct_choice"} <= set(data[0])


def _tomato_matches(data) -> bool:
    if isinstance(data, list):  # the hub's rows
        return bool(data) and isinstance(data[0], dict) and {"key", "demonstration_type", "options"} <= set(data[0])
    return isinstance(data, dict) and bool(data) and all(isinstance(e, dict) for e in data.values())


def load_tomato(json_path: PathLike, video_root: PathLike, task: Optional[str] = None) -> List[VideoQA]:
    """Read a TOMATO annotation file (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        AnnotationError: not a JSON object of entries, an entry without a field, ``answer`` not an
            index into ``options``, or options ``VideoQA`` refuses; the message names the file and
            the entry key.
    """
    json_path = Path(json_path)
    data = _read_rows(json_path)
    if isinstance(data, list) and _tomato_matches(data):
        data = {str(i): e for i, e in enumerate(data)}
    if not isinstance(data, dict):
        raise AnnotationError(f"{json_path}: expected a JSON object of TOMATO entries, got {type(data).__name__}")
    stem = file_task(json_path)
    task = task or TOMATO_TASKS.get(stem, stem)
    samples = []
    for key, e in data.items():
        where = f"{json_path}: entry {key!r}"
        check_entry(e, where, ("question", "options", "answer", "key", "demonstration_type"))
        opts, ans = e["options"], e["answer"]
        if not isinstance(opts, list) or isinstance(ans, bool) or not isinstance(ans, int) or not 0 <= ans < len(opts):
            raise AnnotationError(f"{where}: 'answer' must be an index into 'options' (0..{len(opts) - 1 if isinstance(opts, list) else '?'}), got {ans!r}")
        try:
            check_times(e.get("start"), e.get("end"))
            samples.append(VideoQA(
                video=str(Path(video_root) / str(e["demonstration_type"]) / f"{e['key']}.mp4"),
                question=e["question"], candidates=opts, answer=opts[ans], task=task, question_id=f"{task}_{key}",
                extra={k: v for k, v in e.items() if k not in ("question", "options", "answer")}))
        except ValueError as exc:
            raise AnnotationError(f"{where}: {exc}") from exc
    return samples


def load_longvideobench(json_path: PathLike, video_root: PathLike) -> List[VideoQA]:
    """Read a LongVideoBench annotation file (``lvb_val.json``): a JSON list of ``{id, video_path,
    question, candidates, correct_choice (index), duration, question_category}``; videos at
    ``<video_root>/<video_path>``, frames by the benchmark's own rule (``sampler="longvideobench"``
    with the annotated duration), subtitles not inserted (as the paper). The question block is
    the official ``qa_template``: ``Question: ...\nOptions:\n(A) ...``.

    Raises:
        FileNotFoundError: no such file.
        AnnotationError: not a list, an entry without a field, ``correct_choice`` not an index into
            ``candidates``, a duration that is not a positive number; the message names the entry.
    """
    json_path = Path(json_path)
    data = read_annotation_json(json_path)
    if not isinstance(data, list):
        raise AnnotationError(f"{json_path}: expected a JSON list of LongVideoBench entries, got {type(data).__name__}")
    samples, seen = [], {}
    for i, e in enumerate(data):
        where = f"{json_path}: entry {i}"
        check_entry(e, where, ("id", "video_path", "question", "candidates", "correct_choice", "duration"))
        cands, ans, dur = e["candidates"], e["correct_choice"], e["duration"]
        if not isinstance(cands, list) or isinstance(ans, bool) or not isinstance(ans, int) or not 0 <= ans < len(cands):
            raise AnnotationError(f"{where}: 'correct_choice' must be an index into 'candidates', got {ans!r}")
        if isinstance(dur, bool) or not isinstance(dur, (int, float)) or not dur > 0:
            raise AnnotationError(f"{where}: 'duration' must be a positive number of seconds, got {dur!r}")
        sid = str(e["id"])
        claim_id(seen, sid, i, json_path, "id")
        try:
            samples.append(VideoQA(video=str(Path(video_root) / str(e["video_path"])), question=e["question"],
                                   candidates=cands, answer=cands[ans], task=e.get("question_category"),
                                   question_id=sid, sampler="longvideobench",
                                   extra={k: v for k, v in e.items() if k not in ("question", "candidates")}))
        except ValueError as exc:
            raise AnnotationError(f"{where}: {exc}") from exc
    return samples


VIDEOMME_EXTENSIONS = ("mp4", "avi", "mov", "mkv")  # tried in this order, as the official loader does


def _read_rows(path: Path):
    """A parquet file's rows as a list of dicts (pandas), or the parsed JSON of any other file."""
    if path.suffix == ".parquet":
        if not path.is_file():
            raise FileNotFoundError(f"annotation file not found: {path}")
        import pandas as pd

        try:
            return [{k: (list(v) if hasattr(v, "tolist") and not isinstance(v, str) else v) for k, v in row.items()}
                    for row in pd.read_parquet(path).to_dict("records")]
        except Exception as exc:  # pyarrow's errors for a truncated or foreign file
            raise AnnotationError(f"{path} is not a readable parquet file: {exc}") from exc
    return read_annotation_json(path)


def _first_existing(root: PathLike, stem: str, extensions: Sequence[str]) -> Path:
    """``root/stem.<ext>`` for the first extension that exists (the official loaders' order), else
    the first extension's path (the run then records the sample as missing its video)."""
    paths = [Path(root) / f"{stem}.{x}" for x in extensions]
    return next((p for p in paths if p.exists()), paths[0])


def _videomme_matches(data) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and \
        {"question_id", "task_type", "options"} <= set(data[0])


def load_videomme(path: PathLike, video_root: PathLike, open_ended: bool = False) -> List[VideoQA]:
    """Read Video-MME (map-the-flow ``tasks/eval/videomme``): rows ``{url (or videoID), question_id,
    task_type, question, options ["A. ...", ...], answer (a letter), duration, domain}``; the video is
    ``<video_root>/<YouTube id>.{mp4,avi,mov,mkv}`` (the first that exists), the id taken from the
    url; subtitles are not used (as the paper). Options keep their own labels: the prompt writes
    ``A. text`` lines (``VideoQA.option_format``) and keeps the block's final newline, and the answer
    prompt is ``Best option:`` (official ``information_flow_analysis.py`` for ``videomme``).
    ``open_ended=True`` (format ``videomme_open``): the official open-ended variant, the question
    alone with the right option's text as the reference answer (prompt template ``eval_mvbench_open``).

    Raises:
        FileNotFoundError: no such file.
        AnnotationError: not a list of rows, a row without a field, an option not labelled ``<letter>.``
            in order, or an answer letter with no option; the message names the file and the row.
    """
    path = Path(path)
    data = _read_rows(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected Video-MME rows (a list), got {type(data).__name__}")
    samples, seen = [], {}
    for i, e in enumerate(data):
        where = f"{path}: row {i}"
        check_entry(e, where, ("question_id", "task_type", "question", "options", "answer"))
        vid = str(e.get("videoID") or "") if not e.get("url") else str(e["url"]).split("watch?v=")[-1]
        if not vid:
            raise AnnotationError(f"{where}: needs 'url' (or 'videoID') to find its video")
        opts, texts = e["options"], []
        if not isinstance(opts, list) or len(opts) < 2:
            raise AnnotationError(f"{where}: 'options' must be a list of 'A. ...' strings, got {opts!r}")
        for j, o in enumerate(opts):
            label = f"{chr(65 + j)}. "
            if not isinstance(o, str) or not o.startswith(label):
                raise AnnotationError(f"{where}: option {j} must start with {label!r}, got {o!r}")
            texts.append(o[len(label):])
        ans = e["answer"]
        if not isinstance(ans, str) or len(ans) != 1 or not 0 <= ord(ans) - 65 < len(texts):
            raise AnnotationError(f"{where}: 'answer' must be one of the option letters, got {ans!r}")
        video = _first_existing(video_root, vid, VIDEOMME_EXTENSIONS)
        sid = str(e["question_id"])
        claim_id(seen, sid, i, path, "question_id")
        try:
            samples.append(VideoQA(video=str(video), question=e["question"], candidates=[] if open_ended else texts,
                                   answer=texts[ord(ans) - 65], task=str(e["task_type"]), question_id=sid,
                                   option_format="{letter}. {text}", options_end="\n", open_ended=open_ended,
                                   extra={k: e[k] for k in ("duration", "domain", "sub_category", "url") if k in e}))
        except ValueError as exc:
            raise AnnotationError(f"{where}: {exc}") from exc
    return samples


def _vcgbench_matches(data) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and "video_name" in data[0] and \
        bool({"Q", "Q1", "question", "question_1"} & set(data[0]))


def _vcgbench_entries(rows: list) -> list:
    """lmms-eval's rows (``lmms-lab/VideoChatGPT``: ``{video_name, question, answer}``; Consistency one
    question a row, ``question_1`` or ``question_2`` with the other ``"None"``) as Video-ChatGPT's own
    entries (``{Q, A, video_name}``, ``{Q1, Q2, A, video_name}``): a ``question_2`` row joins the
    earlier ``question_1`` entry of its video that has no ``Q2`` yet; one with no such entry is asked
    on its own. Rows already in Video-ChatGPT's keys pass unchanged."""
    out, waiting = [], {}
    for e in rows:
        if not isinstance(e, dict) or not ({"question", "question_1"} & set(e)) or {"Q", "Q1"} & set(e):
            out.append(e)
            continue
        base = {k: v for k, v in e.items() if k not in ("question", "question_1", "question_2", "answer")}
        base["A"] = e.get("answer")
        if "question" in e:
            out.append(dict(base, Q=e["question"]))
        elif str(e.get("question_1")) != "None":
            entry = dict(base, Q1=e["question_1"])
            out.append(entry)
            waiting.setdefault(str(e.get("video_name")), []).append(entry)
        else:
            pending = waiting.get(str(e.get("video_name"))) or []
            if pending:
                pending.pop(0)["Q2"] = e.get("question_2")
            else:
                out.append(dict(base, Q=e.get("question_2")))
    return out


def load_vcgbench(path: PathLike, video_root: PathLike) -> List[VideoQA]:
    """Read a VCGBench file (map-the-flow ``tasks/eval/vcgbench``: ``Benchmarking_QA/generic_qa.json``,
    ``temporal_qa.json``, ``consistency_qa.json``): a JSON list of ``{Q, A, video_name}`` (consistency:
    ``Q1``, ``Q2``; the first is asked, the second kept in ``extra``), or lmms-eval's parquet rows of
    the same questions (``<Task>/test-00000-of-00001.parquet``, read as ``_vcgbench_entries`` says).
    Open-ended samples (``VideoQA.open_ended``): the question alone, the reference answer in
    ``answer``; the video is ``<video_root>/<video_name>.mp4`` (or ``.mkv``); the task is the file's
    stem, as the official keys (a parquet shard: its folder's, ``Generic/`` -> ``generic_qa``).
    The official prompt is the template ``eval_vcgbench`` (``--template eval_vcgbench``).

    Raises:
        FileNotFoundError: no such file.
        AnnotationError: not a list, or an entry without ``video_name``, a question or ``A``; the
            message names the file and the entry.
    """
    path = Path(path)
    data = _read_rows(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of VCGBench entries, got {type(data).__name__}")
    data = _vcgbench_entries(data)
    task = f"{path.parent.name.lower()}_qa" if _SHARD.search(path.stem) else file_task(path)
    samples = []
    for i, e in enumerate(data):
        where = f"{path}: entry {i}"
        qkey = "Q1" if isinstance(e, dict) and "Q1" in e else "Q"
        check_entry(e, where, (qkey, "A", "video_name"))
        name = str(e["video_name"])
        video = _first_existing(video_root, name, ("mp4", "mkv"))
        try:
            samples.append(VideoQA(video=str(video), question=e[qkey], candidates=[], answer=e["A"], task=task,
                                   question_id=f"{task}_{i}", open_ended=True,
                                   extra={k: v for k, v in e.items() if k not in (qkey, "A")}))
        except ValueError as exc:
            raise AnnotationError(f"{where}: {exc}") from exc
    return samples


FORMATS: Registry[AnnotationFormat] = Registry("annotation format", {
    "tvbench": AnnotationFormat("tvbench", load_tvbench, _tvbench_matches,
                                "[{video, question, candidates, answer}]"),
    "tomato": AnnotationFormat("tomato", load_tomato, _tomato_matches,
                               "{key: {question, options, answer, key, demonstration_type}} (or parquet)"),
    "longvideobench": AnnotationFormat("longvideobench", load_longvideobench, _longvideobench_matches,
                                       "[{id, video_path, candidates, correct_choice, duration, ...}]"),
    "videomme": AnnotationFormat("videomme", load_videomme, _videomme_matches,
                                 "[{url, question_id, task_type, question, options, answer}] (or parquet)"),
    "vcgbench": AnnotationFormat("vcgbench", load_vcgbench, _vcgbench_matches,
                                 "[{Q, A, video_name}] (or parquet)"),
    "videomme_open": AnnotationFormat("videomme_open", lambda p, r: load_videomme(p, r, open_ended=True),
                                      _videomme_matches, "Video-MME's rows, asked open-ended", detectable=False),
})


def detect_format(path: PathLike) -> str:
    """The name of the format a file is in.

    Raises:
        FileNotFoundError: no such file.
        AnnotationError: not JSON, a folder, or no known format (the message names each format's fields).
    """
    path = Path(path)
    data = _read_rows(path)
    for name, fmt in FORMATS.items():
        if fmt.detectable and fmt.matches(data):
            return name
    expected = "; ".join(f"{n}: {f.fields}" for n, f in FORMATS.items() if f.detectable)
    raise AnnotationError(f"{path} is in no known annotation format ({expected})")


def load_annotations(path: PathLike, video_root: PathLike, format: str = "auto") -> List[VideoQA]:
    """The samples of one annotation file, in ``format`` (a ``FORMATS`` name) or detected (``"auto"``).

    Raises:
        FileNotFoundError, AnnotationError: as the format's loader; an unknown format name lists the known ones.
    """
    name = detect_format(path) if format == "auto" else format
    if name not in FORMATS:
        raise AnnotationError(f"unknown annotation format {name!r}; known: {sorted(FORMATS)} or 'auto'")
    return FORMATS[name].load(Path(path), video_root)


def load_annotation_files(files: Sequence[Union[str, os.PathLike]],
                          video_root: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
                          limit: Optional[int] = None, format: str = "auto") -> List[VideoQA]:
    """The samples of several annotation files (``videolens.sources.formats.load_annotations`` each, in
    ``format`` or detected), at most ``limit`` per file; ``video_root`` is one folder for all, or one
    per file (a benchmark's tasks keep their videos apart: ``videolens.sources.datasets``).

    Sample ids are unique across files: an id found in more than one file is prefixed with its
    file (``"a/action_sequence:action_sequence_0"``; the path relative to the files' common folder,
    without ``.json``), so two files that share a stem or a question_id never shadow each other.

    Raises:
        FileNotFoundError, AnnotationError: from the loader (a file in no known format names the
            fields each format expects); the same file given twice.
    """
    paths = [Path(f) for f in files]
    resolved = [Path(os.path.abspath(p)) for p in paths]  # not through symlinks: hub caches link files to blobs
    for i, r in enumerate(resolved):
        if r in resolved[:i]:
            raise AnnotationError(f"{paths[i]} is given twice")
    roots = [video_root] * len(paths) if isinstance(video_root, (str, os.PathLike)) else list(video_root)
    if len(roots) != len(paths):
        raise ValueError(f"{len(roots)} video folders for {len(paths)} annotation files")
    parts = []
    for p, root in zip(paths, roots):
        part = load_annotations(p, root, format)
        parts.append(part[:limit] if limit is not None else part)
    owners: Dict[str, set] = {}
    for i, part in enumerate(parts):
        for smp in part:
            owners.setdefault(smp.sample_id, set()).add(i)
    shared = {sid for sid, o in owners.items() if len(o) > 1}
    if shared:
        common = Path(os.path.commonpath([str(r.parent) for r in resolved]))
        for r, part in zip(resolved, parts):
            label = r.relative_to(common).with_suffix("").as_posix()
            for smp in part:
                if smp.sample_id in shared:
                    smp.question_id = f"{label}:{smp.sample_id}"
    return [smp for part in parts for smp in part]
