"""``videolens lens`` and ``videolens genprob`` end to end on a tiny checkpoint and a generated clip,
including resuming an interrupted run."""

from __future__ import annotations

import json
import shutil

import pytest

from videolens.cli import main
from videolens.running.records import read_records

ENTRIES = [
    {"video": "a.mp4", "question": "What did the person do first?",
     "candidates": ["Put down the blanket.", "Took the towel."], "answer": "Took the towel."},
    {"video": "a.mp4", "question": "What is the bird doing?",
     "candidates": ["It flies away.", "It walks toward the camera.", "It sleeps."], "answer": "It sleeps."},
]


@pytest.fixture()
def dataset(tmp_path, clip_path):
    root = tmp_path / "videos"
    root.mkdir()
    shutil.copy(clip_path, root / "a.mp4")
    ann = tmp_path / "action_sequence.json"
    ann.write_text(json.dumps(ENTRIES))
    return ann, root


def _lines(path):
    return path.read_text().splitlines()


def test_lens_cli_runs_and_resumes(tiny_pllava_dir, dataset, tmp_path, capsys):
    ann, root = dataset
    out = tmp_path / "lens_out"
    base = ["lens", "--model", str(tiny_pllava_dir), "--device", "cpu", "--data", str(ann), "--video-root", str(root),
            "--out", str(out), "--bin-size", "2", "--save-topk", "--k", "3"]
    assert main(base + ["--limit", "1"]) == 0  # an interrupted run: one sample finished
    first = _lines(out / "lens.jsonl")
    assert main(base) == 0  # resumes: only the second sample is computed
    lines = _lines(out / "lens.jsonl")
    assert lines[: len(first)] == first
    assert "1 sample(s) done, 1 already done" in capsys.readouterr().out
    recs = read_records(out / "lens.jsonl")
    assert {r["sample_id"] for r in recs} == {"action_sequence_0", "action_sequence_1"}
    counts = [r for r in recs if r["kind"] == "layer_counts" and r["sample_id"] == "action_sequence_0"]
    assert [r["layer"] for r in counts] == [0, 1, 2, 3] and counts[-1]["label"] == "final_post"
    topk = [r for r in recs if r["kind"] == "topk" and r["sample_id"] == "action_sequence_0"]
    assert len(topk) == 4 and len(topk[0]["tokens"][0]) == 3
    # hit records agree with the per-layer counts and the saved top-1 tokens
    for c in counts:
        hits = [r for r in recs if r["kind"] == "hit" and r["sample_id"] == "action_sequence_0" and r["layer"] == c["layer"]]
        assert len(hits) == sum(c["keywords"].values())  # the tiny vocabulary has no shared first sub-tokens
    for name in ("keyword_frequency.png", "word_map_0_action_sequence_0.png"):
        assert (out / name).stat().st_size > 1000
    assert main(base) == 0  # a finished run computes nothing
    assert _lines(out / "lens.jsonl") == lines
    assert "0 sample(s) done, 2 already done" in capsys.readouterr().out
    # other settings in the same folder are refused rather than mixed
    assert main(base[:-2] + ["--k", "4"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_genprob_cli_dataset_and_single_video(tiny_pllava_dir, dataset, clip_path, tmp_path, capsys):
    ann, root = dataset
    out = tmp_path / "gp"
    base = ["genprob", "--model", str(tiny_pllava_dir), "--device", "cpu", "--out", str(out)]
    assert main(base + ["--data", str(ann), "--video-root", str(root)]) == 0
    recs = read_records(out / "genprob.jsonl")
    layers = [r for r in recs if r["kind"] == "layer" and r["sample_id"] == "action_sequence_1"]
    assert [r["layer"] for r in layers] == [0, 1, 2, 3]
    assert set(layers[0]["probs"]) == {"A", "B", "C"} and layers[0]["true_letter"] == "C"
    answer = next(r for r in recs if r["kind"] == "answer" and r["sample_id"] == "action_sequence_1")
    assert answer["probs"] == layers[-1]["probs"]
    assert (out / "answer_probability.png").stat().st_size > 1000
    n = len(_lines(out / "genprob.jsonl"))
    assert main(base + ["--data", str(ann), "--video-root", str(root)]) == 0
    assert len(_lines(out / "genprob.jsonl")) == n
    capsys.readouterr()
    single = base[:-1] + [str(tmp_path / "gp1"), "--video", str(clip_path), "--question", ENTRIES[0]["question"],
                          "--candidates", *ENTRIES[0]["candidates"], "--answer", ENTRIES[0]["answer"]]
    assert main(single) == 0
    assert "final_post" in capsys.readouterr().out
    assert main(single[:-2]) == 2  # no --answer: true and false options unknown
    assert "--answer" in capsys.readouterr().err


def test_cli_argument_errors(tiny_pllava_dir, dataset, tmp_path, capsys):
    ann, root = dataset
    assert main(["lens", "--model", str(tiny_pllava_dir), "--data", str(ann), "--out", str(tmp_path / "o")]) == 2
    assert "--video-root" in capsys.readouterr().err
    assert main(["lens", "--model", str(tiny_pllava_dir), "--data", str(ann), "--video-root", str(root),
                 "--out", str(tmp_path / "o"), "--keywords", "no_such_set"]) == 2
    assert "no_such_set" in capsys.readouterr().err
    assert main(["lens", "--model", str(tiny_pllava_dir), "--data", str(ann), "--video-root", str(root),
                 "--out", str(tmp_path / "o"), "--layers", "9"]) == 2
    assert "layers" in capsys.readouterr().err
