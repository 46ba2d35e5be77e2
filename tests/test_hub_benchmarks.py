"""Benchmarks by name beyond TVBench and MVBench (issue 31): Video-MME (zip chunks), LongVideoBench
(a tar split in parts), VCGBench (lmms-eval's parquet rows) and TOMATO (annotations on the hub,
videos elsewhere), each served by a local stand-in hub in the benchmark's own repository layout and
downloaded through huggingface_hub's HTTP client (tests/fakehub.py)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from fakehub import FakeHub, use_hub
from test_bad_inputs import run_cli
from videolens.sources import datasets
from videolens.sources.formats import FORMATS, load_annotation_files


def resolve_gets(server):
    return [r.split(" [")[0].rsplit("/", 1)[-1] for r in server.requests if r.startswith("GET") and "/resolve/" in r]


def genprob(model_dir, data, out, *extra):
    return run_cli(["genprob", "--model", str(model_dir), "--data", data, *extra, "--out", str(out),
                    "--no-figures", "--no-progress"])


def statuses(out):
    from videolens.running.records import read_statuses

    return read_statuses(Path(out) / "genprob.jsonl")


# ---- Video-MME: one parquet file, the videos in zip chunks that unpack to data/<videoID>.mp4 ----------
@pytest.fixture()
def videomme_repo(tmp_path, clip_path):
    repo = tmp_path / "videomme-repo"
    (repo / "videomme").mkdir(parents=True)
    rows = [{"video_id": f"00{i}", "duration": "short", "domain": "Knowledge", "sub_category": "x",
             "url": f"https://www.youtube.com/watch?v=vid{i}", "videoID": f"vid{i}", "question_id": f"00{i}-1",
             "task_type": "Counting Problem", "question": "What moves?",
             "options": ["A. Left.", "B. Right.", "C. Up.", "D. Down."], "answer": "AB"[i]} for i in range(2)]
    pd.DataFrame(rows).to_parquet(repo / "videomme" / "test-00000-of-00001.parquet")
    for i in range(2):  # one video a chunk
        with zipfile.ZipFile(repo / f"videos_chunked_0{i + 1}.zip", "w") as z:
            z.write(clip_path, f"data/vid{i}.mp4")
    with zipfile.ZipFile(repo / "subtitle.zip", "w") as z:  # in the repository, not needed
        z.writestr("subtitle/vid0.srt", "1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    return repo


def test_videomme_by_name_unpacks_every_chunk_once_and_runs(videomme_repo, tiny_pllava_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    with FakeHub({}, datasets={"lmms-lab/Video-MME": videomme_repo}) as server:
        use_hub(monkeypatch, server, tmp_path / "cache")
        rc, _, err = genprob(tiny_pllava_dir, "videomme", tmp_path / "out")
        assert rc == 0, err
        assert sorted(resolve_gets(server)) == ["test-00000-of-00001.parquet", "videos_chunked_01.zip",
                                                "videos_chunked_02.zip"]  # never the subtitles
        assert statuses(tmp_path / "out") == {"000-1": "ok", "001-1": "ok"}
        files, roots = datasets.fetch("videomme")
        assert roots[0].name == "data" and sorted(p.name for p in roots[0].iterdir()) == ["vid0.mp4", "vid1.mp4"]
        stamp = (roots[0] / "vid0.mp4").stat().st_mtime_ns
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a node without network: from the cache, not unpacked again
        n = len(server.requests)
        assert datasets.fetch("videomme")[1] == roots and len(server.requests) == n
        assert (roots[0] / "vid0.mp4").stat().st_mtime_ns == stamp


# ---- LongVideoBench: lvb_val.json, the videos one tar split in parts ------------------------------------
def split_tar(members, folder: Path, name: str, cuts) -> None:
    """``members`` ({archive name: bytes}) as one tar written in parts ``<name>.part.aa``, ``.ab``, ...
    cut at byte offsets ``cuts`` (so members straddle the parts)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for arc, data in members.items():
            info = tarfile.TarInfo(arc)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    payload = buf.getvalue()
    edges = [0, *cuts, len(payload)]
    for k, (a, b) in enumerate(zip(edges, edges[1:])):
        (folder / f"{name}.part.a{'abcdefgh'[k]}").write_bytes(payload[a:b])


@pytest.fixture()
def longvideobench_repo(tmp_path, clip_path):
    repo = tmp_path / "lvb-repo"
    repo.mkdir()
    entries = [{"id": f"q{i}", "video_path": f"v{i}.mp4", "question": "What moves?", "candidates": ["left", "right"],
                "correct_choice": i, "duration": 2.0, "question_category": "T2E"} for i in range(2)]
    (repo / "lvb_val.json").write_text(json.dumps(entries))
    (repo / "lvb_test_wo_gt.json").write_text("[]")
    clip = clip_path.read_bytes()
    split_tar({"videos/v0.mp4": clip, "./videos/v1.mp4": clip}, repo, "videos.tar", [700, len(clip) // 2 + 600])
    return repo


def test_longvideobench_reads_its_split_tar_as_one_stream(longvideobench_repo, tiny_pllava_dir, clip_path, tmp_path,
                                                           monkeypatch):
    with FakeHub({}, datasets={"longvideobench/LongVideoBench": longvideobench_repo}) as server:
        use_hub(monkeypatch, server, tmp_path / "cache")
        files, roots = datasets.fetch("longvideobench")
        assert [f.name for f in files] == ["lvb_val.json"] and roots[0].name == "videos"
        for v in ("v0.mp4", "v1.mp4"):  # members across part boundaries, a "./" prefix dropped
            assert (roots[0] / v).read_bytes() == clip_path.read_bytes()
        assert "lvb_test_wo_gt.json" not in resolve_gets(server)
        assert not list(files[0].parent.glob("videos.tar")), "the parts are never joined on disk"
        rc, _, err = genprob(tiny_pllava_dir, "longvideobench:val", tmp_path / "out")
        assert rc == 0, err
        assert statuses(tmp_path / "out") == {"q0": "ok", "q1": "ok"}


def test_a_gated_benchmark_says_so_in_one_line(longvideobench_repo, tiny_pllava_dir, tmp_path, monkeypatch):
    with FakeHub({}, datasets={"longvideobench/LongVideoBench": longvideobench_repo},
                 gated={"longvideobench/LongVideoBench"}) as server:
        use_hub(monkeypatch, server, tmp_path / "cache")
        rc, _, err = genprob(tiny_pllava_dir, "longvideobench", tmp_path / "out")
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1 and "a gated dataset repository: accept its terms" in lines[0], err


# ---- VCGBench: lmms-eval's parquet rows, the videos in videos.zip (Test_Videos/) ----------------------------
@pytest.fixture()
def vcgbench_repo(tmp_path, clip_path):
    repo = tmp_path / "vcg-repo"
    for task in ("Generic", "Temporal", "Consistency"):
        (repo / task).mkdir(parents=True)
    pd.DataFrame([{"video_name": "v_a", "question": "What happens?", "answer": "A square moves."}]).to_parquet(
        repo / "Generic" / "test-00000-of-00001.parquet")
    pd.DataFrame([{"video_name": "v_a", "question": "What happens first?", "answer": "It moves."}]).to_parquet(
        repo / "Temporal" / "test-00000-of-00001.parquet")
    pd.DataFrame([  # one question a row, the other "None"; the pair joined into one official entry
        {"video_name": "v_a", "question_1": "Where does it go?", "question_2": "None", "answer": "Left."},
        {"video_name": "v_b", "question_1": "None", "question_2": "What colour?", "answer": "Red."},
        {"video_name": "v_a", "question_1": "None", "question_2": "Which way?", "answer": "Left."},
    ]).to_parquet(repo / "Consistency" / "test-00000-of-00001.parquet")
    with zipfile.ZipFile(repo / "videos.zip", "w") as z:
        z.write(clip_path, "Test_Videos/v_a.mp4")
        z.write(clip_path, "Test_Videos/v_b.mkv")
    return repo


def test_vcgbench_rows_become_the_official_entries(vcgbench_repo, tmp_path, monkeypatch):
    with FakeHub({}, datasets={"lmms-lab/VideoChatGPT": vcgbench_repo}) as server:
        use_hub(monkeypatch, server, tmp_path / "cache")
        files, roots = datasets.fetch("vcgbench:generic,consistency")
        assert "Temporal" not in " ".join(r for r in server.requests)  # only the tasks asked for
    samples = load_annotation_files(files, roots)
    assert [s.task for s in samples] == ["generic_qa", "consistency_qa", "consistency_qa"]
    g, a, b = samples
    assert g.open_ended and g.question == "What happens?" and g.answer == "A square moves."
    assert (a.question, a.extra["Q2"]) == ("Where does it go?", "Which way?")  # Q1 asked, Q2 kept, as official
    assert b.question == "What colour?" and b.video.endswith("Test_Videos/v_b.mkv")  # unpaired: asked on its own
    assert Path(a.video).is_file() and Path(a.video).parent == roots[1]


# ---- TOMATO: the QAs on the hub (parquet), the videos elsewhere --------------------------------------------
@pytest.fixture()
def tomato_repo(tmp_path):
    repo = tmp_path / "tomato-repo"
    (repo / "data").mkdir(parents=True)
    rows = [{"question": "How many times does it turn?", "demonstration_type": "human", "motion_type": "count",
             "answer": i, "note": "", "key": f"k{i}", "options": ["1", "2", "3"], "video_source_url": "",
             "variation": {"composite": 0, "counterfactual": 0, "first_person": 0, "zoom": 0}} for i in range(2)]
    pd.DataFrame(rows).to_parquet(repo / "data" / "count-00000-of-00001.parquet")
    pd.DataFrame(rows).to_parquet(repo / "data" / "shape_trend-00000-of-00001.parquet")
    return repo


def test_tomato_takes_its_questions_from_the_hub_and_its_videos_from_video_root(tomato_repo, tiny_pllava_dir, clip_path,
                                                                                tmp_path, monkeypatch):
    videos = tmp_path / "tomato-videos"
    (videos / "human").mkdir(parents=True)
    for k in ("k0", "k1"):
        shutil.copy(clip_path, videos / "human" / f"{k}.mp4")
    with FakeHub({}, datasets={"yale-nlp/TOMATO": tomato_repo}) as server:
        use_hub(monkeypatch, server, tmp_path / "cache")
        rc, _, err = genprob(tiny_pllava_dir, "tomato:count", tmp_path / "out")
        lines = [l for l in err.splitlines() if l.strip()]
        assert rc == 2 and len(lines) == 1 and "tomato's videos are not on the hub" in lines[0].lower() and \
            "drive.google.com" in lines[0] and "--video-root DIR" in lines[0], err
        rc, out, err = run_cli(["download", "tomato:count"])
        assert rc == 0 and "count-00000-of-00001.parquet  (videos: not on the hub)" in out, err
        rc, _, err = genprob(tiny_pllava_dir, "tomato:count", tmp_path / "out", "--video-root", str(videos))
        assert rc == 0, err
        assert statuses(tmp_path / "out") == {"Count_0": "ok", "Count_1": "ok"}
        assert "shape_trend" not in " ".join(server.requests)
        files, roots = datasets.fetch("tomato:shape_trend", video_root=videos)
    assert {s.task for s in load_annotation_files(files, roots)} == {"ShapeTrend"}  # the official task name


def test_video_root_is_refused_where_the_videos_come_from_the_hub(tiny_pllava_dir, tmp_path):
    rc, _, err = genprob(tiny_pllava_dir, "videomme", tmp_path / "out", "--video-root", str(tmp_path))
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1 and "--video-root is not used with --data videomme" in lines[0], err


def test_an_archive_entry_outside_its_folder_is_refused(tmp_path):
    snap = tmp_path / "snapshots" / "abc"
    snap.mkdir(parents=True)
    split_tar({"videos/ok.mp4": b"fine", "videos/../../escape.mp4": b"bad"}, snap, "videos.tar", [600])
    with pytest.raises(ValueError, match="points outside the folder"):
        datasets._video_folder(snap, "videos", "videos.tar.part.*")
    assert not list(tmp_path.rglob("escape.mp4"))


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_every_benchmark_row_is_well_formed(name):
    from pathlib import PurePosixPath

    bench = datasets.DATASETS[name]
    assert bench.format in FORMATS and bench.tasks and not set(bench.unavailable) & set(bench.tasks)
    for t in bench.tasks:
        assert bench.annotation(t)
        if bench.videos is None:
            assert "--video-root" not in bench.videos_elsewhere and bench.videos_elsewhere
            continue
        folder, archive = PurePosixPath(bench.video_folder(t)), PurePosixPath(bench.archive(t))
        assert archive.parent == PurePosixPath(".") or archive.parent in folder.parents, (t, folder, archive)
