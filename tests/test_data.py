"""VideoQA samples and TVBench-format annotation files."""

from __future__ import annotations

import json

import pytest

import videolens as vl
from videolens.sources.data import AnnotationError, InvalidSampleError
from videolens.sources.formats import load_annotation_files


def test_real_tvbench_entries(shared_data):
    for name in ("action_sequence_sample.json", "moving_direction_sample.json"):
        path = shared_data / "tvbench" / name
        raw = json.loads(path.read_text())
        samples = vl.load_tvbench(path, "/videos")
        assert len(samples) == len(raw)
        for s, e in zip(samples, raw):
            assert s.question == e["question"] and s.candidates == e["candidates"]
            assert s.candidates[s.answer_index] == e["answer"]
            assert s.video == f"/videos/{e['video']}"
            assert s.start == e.get("start") and s.end == e.get("end")
        assert samples[0].task == name.replace("_sample.json", "")


@pytest.mark.parametrize("entry,msg", [
    ({"video": "a.mp4", "question": "q", "candidates": ["x", "y"], "answer": "z"}, "not among"),
    ({"video": "a.mp4", "question": "q", "candidates": ["x"], "answer": "x"}, "at least 2"),
    ({"video": "a.mp4", "candidates": ["x", "y"], "answer": "x"}, "missing field"),
    ({"video": "a.mp4", "question": None, "candidates": ["x", "y"], "answer": "x"}, "question must be a string"),
    ({"video": "a.mp4", "question": "q <image>", "candidates": ["x", "y"], "answer": "x"}, "placeholder"),
    ({"video": "a.mp4", "question": "q", "candidates": ["x", "y\n(C) z"], "answer": "x"}, "forge an option line"),
    ({"video": "a.mp4", "question": "q", "candidates": ["x", "x"], "answer": "x"}, "duplicate candidates"),
    ({"video": "a.mp4", "question": "q", "candidates": "xy", "answer": "x"}, "list of strings"),
    ({"video": "a.mp4", "question": "q", "candidates": [f"c{i}" for i in range(30)], "answer": "c0"}, "at most 26"),
])
def test_malformed_entry_names_index(tmp_path, entry, msg):
    good = {"video": "a.mp4", "question": "q", "candidates": ["x", "y"], "answer": "x"}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps([good, good, entry]))
    with pytest.raises(AnnotationError, match=rf"entry 2: .*{msg}"):
        vl.load_tvbench(path, tmp_path)


@pytest.mark.parametrize("times", [{"start": 5, "end": 2}, {"start": "soon"}, {"end": float("nan")}, {"start": -1}])
def test_bad_start_end_is_that_samples_skip(tmp_path, times):
    """A bad start/end does not end the load: that one sample raises InvalidSampleError when loaded
    (a dataset run records it as skipped), naming the file and entry."""
    good = {"video": "a.mp4", "question": "q", "candidates": ["x", "y"], "answer": "x"}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps([good, {**good, **times}]).replace("NaN", "NaN"))
    samples = vl.load_tvbench(path, tmp_path)
    assert len(samples) == 2 and samples[0].invalid is None
    with pytest.raises(InvalidSampleError, match=r"ann.json: entry 1: (start|end)"):
        samples[1].load(4)
    with pytest.raises(ValueError, match="start|end"):
        vl.VideoQA(video="v.mp4", question="q", candidates=["a", "b"], answer="a", **times)


def test_duplicate_ids_named_and_files_never_collide(tmp_path):
    e = {"video": "a.mp4", "question": "q", "candidates": ["x", "y"], "answer": "x"}
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps([{**e, "question_id": "q1"}, e, {**e, "question_id": "q1"}]))
    with pytest.raises(AnnotationError, match=r"entries 0 and 2 have the same question_id 'q1'"):
        vl.load_tvbench(dup, tmp_path)
    # two files with one stem in different folders: default ids task_i would collide
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "action.json").write_text(json.dumps([e, {**e, "question_id": "shared"}]))
    (tmp_path / "other.json").write_text(json.dumps([{**e, "question_id": "own"}]))
    files = [tmp_path / "a" / "action.json", tmp_path / "b" / "action.json", tmp_path / "other.json"]
    ids = [s.sample_id for s in load_annotation_files(files, tmp_path)]
    assert len(ids) == len(set(ids)) == 5
    assert ids == ["a/action:action_0", "a/action:shared", "b/action:action_0", "b/action:shared", "own"]
    with pytest.raises(AnnotationError, match="given twice"):
        load_annotation_files([files[0], files[0]], tmp_path)


def test_not_a_list(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{}")
    with pytest.raises(AnnotationError, match="list"):
        vl.load_tvbench(p, tmp_path)
    with pytest.raises(FileNotFoundError):
        vl.load_tvbench(tmp_path / "missing.json", tmp_path)
    with pytest.raises(AnnotationError, match="is a folder"):
        vl.load_tvbench(tmp_path, tmp_path)


def test_videoqa_letters():
    s = vl.VideoQA(video="v.mp4", question="q", candidates=["a", "b", "c"], answer="c")
    assert s.letters == ["A", "B", "C"] and s.answer_letter == "C"
    with pytest.raises(ValueError, match="not among"):
        vl.VideoQA(video="v.mp4", question="q", candidates=["a", "b"], answer="c")
