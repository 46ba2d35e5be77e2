"""Pathway discovery: kept ranges from a sweep's effects, specs from flow records (per task and per
sample too), the CLI, and Finding 4 on the testbed: the bundled model's discovered spec keeps its
accuracy within 5 points of full causal attention on fresh clips while random blocking of as many
edges loses at least 15."""

from __future__ import annotations

import json

import pytest

from videolens.cli import main
from videolens.pathways import load_spec
from videolens.pathways.discover import discover_specs, kept_ranges
from videolens.running.records import read_records


def test_kept_ranges():
    effects = {0: -12.0, 1: -3.0, 2: -20.0, 3: 0.0, 4: 0.1, 5: -30.0}
    assert kept_ranges(effects, 10.0, merge_gap=1) == [[0, 2], [5, 5]]  # 0 and 2 merge across one layer
    assert kept_ranges(effects, 10.0, merge_gap=0) == [[0, 0], [2, 2], [5, 5]]
    assert kept_ranges(effects, 50.0) == [[5, 5]]  # none reaches it: the most harmful layer alone


def test_discover_cli_per_task_and_sample(tmp_path):
    from videolens.sources.synthetic import write_dataset

    train = write_dataset(tmp_path / "train", n_per_task=1, seed=21, tasks=["color_change", "moving_direction"])
    files = [str(p) for p in train.values()]
    assert main(["flow", "--target", "cross-frame", "vql-to-ql", "--window", "1", "--samples", "all", "--data", *files,
                 "--video-root", str(tmp_path / "train" / "videos"), "--out", str(tmp_path / "flow"), "--device", "cpu",
                 "--no-progress", "--no-figures"]) == 0
    out = tmp_path / "pw"
    assert main(["pathways", "--discover", str(tmp_path / "flow"), "--discover-method", "threshold", "--discover-by", "task",
                 "--data", files[0],
                 "--video-root", str(tmp_path / "train" / "videos"), "--out", str(out), "--device", "cpu",
                 "--no-progress", "--no-figures"]) == 0
    spec = load_spec(out / "discovered_spec.json")
    assert spec.n_layers == 6 and set(spec.kept) >= {"cross_frame", "video_to_question", "question_to_last"}
    assert set(json.loads((out / "discovered_specs.json").read_text())) == {"color_change", "moving_direction"}
    per_sample = discover_specs(read_records(tmp_path / "flow" / "records.jsonl"), 6, "sample")
    assert len(per_sample) == 2  # sample-adaptive: one spec from each sample's own sweep
    assert main(["pathways", "--data", files[0], "--out", str(tmp_path / "x")]) == 2  # neither --spec nor --discover


def test_finding4_on_the_testbed_with_the_discovered_spec(tmp_path):
    from videolens.sources.synthetic import write_dataset

    fresh = write_dataset(tmp_path, n_per_task=6, seed=31337)
    out = tmp_path / "pw"
    assert main(["pathways", "--spec", "tiny-videollm-discovered", "--random-control", "--random-match", "total",
                 "--data", *map(str, fresh.values()), "--video-root", str(tmp_path / "videos"), "--out", str(out),
                 "--device", "cpu", "--no-progress", "--no-figures"]) == 0
    recs = read_records(out / "records.jsonl")
    acc = {c: 100 * sum(r["correct"] for r in recs if r["condition"] == c) / sum(r["condition"] == c for r in recs)
           for c in ("full", "pathways", "random")}
    assert acc["pathways"] >= acc["full"] - 5 and acc["random"] <= acc["full"] - 15, acc  # measured 96.7 / 100 / 66.7
