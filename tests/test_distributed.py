"""Sharded sweeps: ``torchrun --nproc-per-node 2 -m videolens flow ...`` on CPU over gloo writes, after
rank 0's merge, the same records (and statuses, in the same order) as a one-process run; the merge
resumes; each rank's share is every second sample.

The default run plays the two ranks one after the other in this process (rank 1, then rank 0, which
merges; no process group, so the barrier is a no-op): sharding, rank folders and the merge. The real
torchrun over gloo (three more interpreters importing TransformerLens, ~15 s) runs under ``-m slow``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from videolens import distributed
from videolens.cli import main
from videolens.running.records import read_records, read_statuses

QUESTIONS = [("What did the person do first?", ["Put down the blanket.", "Took the towel."]),
             ("What is the bird doing?", ["It flies away.", "It sleeps.", "It walks toward the camera."])]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, clip_path):
    from videolens.testing import make_tiny_pllava

    root = tmp_path_factory.mktemp("shards")
    model = make_tiny_pllava(root / "ckpt", n_layers=4)
    shutil.copy(clip_path, root / "a.mp4")
    entries = [{"video": "a.mp4", "question": q, "candidates": c, "answer": a} for q, c in QUESTIONS for a in c[:2]]
    entries.insert(2, {"video": "missing.mp4", "question": QUESTIONS[0][0], "candidates": QUESTIONS[0][1],
                       "answer": QUESTIONS[0][1][0]})
    (root / "task.json").write_text(json.dumps(entries))
    return root, model


def _args(root, model, out, *extra):
    return ["flow", "--model", str(model), "--data", str(root / "task.json"), "--video-root", str(root),
            "--out", str(out), "--target", "cross-frame", "--window", "3", "--samples", "all", "--no-progress",
            "--device", "cpu", "--no-figures", *extra]


def test_shard_takes_every_kth_sample(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert distributed.shard(list(range(8))) == [1, 4, 7]
    assert distributed.rank_folder(tmp_path) == tmp_path / "ranks" / "rank1"
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed.shard([1, 2]) == [1, 2] and distributed.rank_folder(tmp_path) == tmp_path


def test_two_ranks_in_one_process_merge_to_the_one_process_records(setup, tmp_path, monkeypatch):
    root, model = setup
    assert main(_args(root, model, tmp_path / "one")) == 0
    monkeypatch.setattr(distributed, "init", lambda: None)  # no process group: barrier() does nothing
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):  # rank 0 last: it merges what both wrote
        monkeypatch.setenv("RANK", rank)
        assert main(_args(root, model, tmp_path / "two")) == 0
    _same_as_one_process(tmp_path)


@pytest.mark.slow
def test_two_ranks_merge_to_the_one_process_records(setup, tmp_path):
    root, model = setup
    assert main(_args(root, model, tmp_path / "one")) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "videolens", *_args(root, model, tmp_path / "two")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_as_one_process(tmp_path)


def _same_as_one_process(tmp_path):
    one, two = tmp_path / "one" / "records.jsonl", tmp_path / "two" / "records.jsonl"
    assert read_records(two) == read_records(one) and len(read_records(one)) > 0
    assert list(read_statuses(two).items()) == list(read_statuses(one).items())  # same samples, same order
    assert "missing_video" in read_statuses(two).values()
    shares = [set(read_statuses(tmp_path / "two" / "ranks" / f"rank{r}" / "records.jsonl")) for r in (0, 1)]
    assert shares[0] and shares[1] and not shares[0] & shares[1]
    header = json.loads(two.read_text().splitlines()[0])
    assert header["_run"] and header["config"]["command"] == "flow"
    # the merge is resumable: merging again keeps one copy of every sample
    distributed.merge_records(tmp_path / "two", "records.jsonl", list(read_statuses(one)), header["config"])
    assert read_records(two) == read_records(one)
