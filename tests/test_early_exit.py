"""Structural early exit: the accuracy when the answer is read at layer k by the logit lens, per task,
from genprob's records, and the earliest layer within the tolerance of the final accuracy."""

from __future__ import annotations

import csv

import pytest

from videolens.cli import main
from videolens.lens import early_exit
from videolens.running.records import read_records


@pytest.fixture(scope="module")
def records(tiny_pllava_dir, clip_path, tmp_path_factory):
    import json
    import shutil

    root = tmp_path_factory.mktemp("exit")
    shutil.copy(clip_path, root / "a.mp4")
    qs = [("What did the person do first?", ["Put down the blanket.", "Took the towel.", "It sleeps."]),
          ("What is the bird doing?", ["It flies away.", "It sleeps.", "It walks toward the camera."])]
    for task, (q, c) in zip(("action_sequence", "action_antonym"), qs):
        (root / f"{task}.json").write_text(json.dumps([{"video": "a.mp4", "question": q, "candidates": c, "answer": a}
                                                       for a in c]))
    out = root / "gp"
    assert main(["genprob", "--model", str(tiny_pllava_dir), "--device", "cpu", "--out", str(out), "--data",
                 str(root / "action_sequence.json"), str(root / "action_antonym.json"), "--video-root", str(root),
                 "--no-progress"]) == 0
    return out, read_records(out / "genprob.jsonl")


def test_accuracy_by_layer_per_task_and_the_exit_layer(records):
    out, recs = records
    exits = {e.task: e for e in early_exit(recs)}
    assert set(exits) == {"action_sequence", "action_antonym", "all"} and exits["all"].n == 6
    answers = [r for r in recs if r["kind"] == "answer"]
    assert exits["all"].final == pytest.approx(100 * sum(a["correct"] for a in answers) / len(answers))
    for e in exits.values():
        # the rule, recomputed: the first layer whose accuracy is within 1 point of the last
        first = next(l for l, a in zip(e.layers, e.accuracy) if abs(a - e.accuracy[-1]) <= 1.0)
        assert e.exit_layer == first and e.layers[-1] == max(r["layer"] for r in recs if r["kind"] == "layer")
        by_hand = [r for r in recs if r["kind"] == "layer" and r["layer"] == e.exit_layer
                   and (e.task == "all" or r["sample_id"].startswith(e.task))]
        assert e.row()["exit_accuracy"] == pytest.approx(
            100 * sum(r["argmax"] == r["true_letter"] for r in by_hand) / len(by_hand), abs=0.01)
    rows = list(csv.DictReader((out / "early_exit.csv").open()))
    assert [r["task"] for r in rows][-1] == "all" and (out / "early_exit.png").stat().st_size > 1000


def test_a_wider_tolerance_never_exits_later(records):
    _, recs = records
    tight = {e.task: e.exit_layer for e in early_exit(recs, tolerance=0.0)}
    loose = {e.task: e.exit_layer for e in early_exit(recs, tolerance=100.0)}
    assert all(loose[t] <= tight[t] for t in tight) and set(loose.values()) == {0}
