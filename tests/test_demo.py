"""The README's main job, ``videolens demo``, end to end (real mp4 files, records, figure)."""

from __future__ import annotations

import json

import torch

from videolens.cli import main
from videolens.running.records import read_records


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-per-task", "1", "--device", "cpu"]) == 0
    assert torch.is_grad_enabled()  # the in-process run leaves autograd as it found it
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed
    answers = read_records(out / "answers.jsonl")
    assert len(answers) == len(list((out / "data").glob("*.json")))  # one clip per task
    assert all(set(r["probs"]) == set("ABCD"[: len(r["probs"])]) for r in answers)
    assert len(list((out / "data" / "videos").glob("*.mp4"))) == len(answers)
    flow = read_records(out / "flow" / "records.jsonl")
    assert flow and all(r["target"] == "cross-frame" for r in flow)
    assert (out / "flow" / "flow_cross-frame.png").stat().st_size > 1000
    assert (out / "flow" / "summary.csv").exists()
    # a second run resumes: nothing is recomputed and the records stay the same
    assert main(["demo", "--out", str(out), "--n-per-task", "1", "--device", "cpu"]) == 0
    assert read_records(out / "flow" / "records.jsonl") == flow
