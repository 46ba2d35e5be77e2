"""``videolens answer`` end to end on a tiny checkpoint and a real video file."""

from __future__ import annotations

import json

import pytest

from videolens.cli import main


def test_answer_json(tiny_pllava_dir, clip_path, capsys):
    rc = main(["answer", "--model", str(tiny_pllava_dir), "--device", "cpu", "--video", str(clip_path),
               "--question", "What did the person do first?", "--candidates", "Put down the blanket.",
               "Took the towel.", "--answer", "Took the towel.", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["probs"]) == {"A", "B"} and out["answer"] in "AB"
    assert out["answer"] == max(out["probs"], key=out["probs"].get)
    assert 0 < sum(out["probs"].values()) <= 1


def test_answer_text_and_errors(tiny_pllava_dir, clip_path, tmp_path, capsys):
    rc = main(["answer", "--model", str(tiny_pllava_dir), "--device", "cpu", "--video", str(clip_path),
               "--question", "What did the person do first?", "--candidates", "Put down the blanket.", "Took the towel."])
    assert rc == 0
    assert "answer: (" in capsys.readouterr().out
    rc = main(["answer", "--model", str(tiny_pllava_dir), "--device", "cpu", "--video", str(tmp_path / "none.mp4"),
               "--question", "q", "--candidates", "a", "b"])
    assert rc == 2
    assert "none.mp4" in capsys.readouterr().err
