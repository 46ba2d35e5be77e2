"""VideoQA samples and TVBench-format annotation files."""

from __future__ import annotations

import json

import pytest

import videolens as vl
from videolens.data import AnnotationError


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
    ({"video": "a.mp4", "question": "q", "candidates": ["x", "y"], "answer": "x", "start": 5, "end": 2}, "before end"),
])
def test_malformed_entry_names_index(tmp_path, entry, msg):
    good = {"video": "a.mp4", "question": "q", "candidates": ["x", "y"], "answer": "x"}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps([good, good, entry]))
    with pytest.raises(AnnotationError, match=rf"entry 2: .*{msg}"):
        vl.load_tvbench(path, tmp_path)


def test_not_a_list(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{}")
    with pytest.raises(AnnotationError, match="list"):
        vl.load_tvbench(p, tmp_path)
    with pytest.raises(FileNotFoundError):
        vl.load_tvbench(tmp_path / "missing.json", tmp_path)


def test_videoqa_letters():
    s = vl.VideoQA(video="v.mp4", question="q", candidates=["a", "b", "c"], answer="c")
    assert s.letters == ["A", "B", "C"] and s.answer_letter == "C"
    with pytest.raises(ValueError, match="not among"):
        vl.VideoQA(video="v.mp4", question="q", candidates=["a", "b"], answer="c")
