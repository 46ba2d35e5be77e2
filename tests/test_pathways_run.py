"""Pathway hooks on tiny models: keep-all = plain forward, one blocked type = its knockout;
random control; evaluation records and summary; the ``videolens pathways`` command."""

from __future__ import annotations

import argparse
import csv
import json

import pytest
import torch

import videolens as vl
from videolens.hooked.attention import fast_attention
from videolens.hooked.edges import blocked_mask
from videolens.pathways import (
    EDGE_TYPES,
    PathwayMasker,
    count_edges,
    evaluate,
    evaluate_sample,
    load_spec,
    spec_from_dict,
    summarize,
)
from videolens.running.records import RunConfigMismatch, read_records

from videolens.testing import make_tiny_pllava

QA = [
    dict(question="What did the person do first?", candidates=["Put down the blanket.", "Took the towel."],
         answer="Took the towel."),
    dict(question="Which direction does the purple sphere move in the video?",
         candidates=["Up and to the right.", "Up and to the left.", "Down and to the left.", "Down and to the right."],
         answer="Down and to the left."),
    dict(question="What is the bird doing?", candidates=["It flies away.", "It walks toward the camera.", "It sleeps."],
         answer="It flies away."),
]


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory):
    path = make_tiny_pllava(tmp_path_factory.mktemp("ckpt") / "pllava8", n_layers=8, seed=3)
    return vl.HookedVideoLLM.from_pretrained(path, device="cpu")


@pytest.fixture(scope="module")
def inputs8(deep_model, clip_path):
    return deep_model.prepare(vl.VideoQA(video=str(clip_path), task="action_sequence", **QA[1]), num_frames=8)


def keep_all(n_layers, **extra):
    kept = {t: [[0, n_layers - 1]] for t in EDGE_TYPES if t != "last_to_last"}
    return spec_from_dict({"name": "keep-all", "n_layers": n_layers, "kept": kept, **extra})


def knockout_hook(mask):
    def hook(scores, hook):  # hand-built: -inf on the blocked (query, key) edges, every head
        return scores.masked_fill(mask, float("-inf"))

    return hook


def test_keep_everything_is_the_plain_forward(deep_model, inputs8):
    with torch.no_grad():
        plain = deep_model(inputs8)
        plan = keep_all(8).plan(8)
        masker = PathwayMasker(inputs8.layout, plan)
        assert masker.fwd_hooks() == []  # nothing to block: nothing hooked
        assert torch.equal(deep_model.run_with_hooks(inputs8, fwd_hooks=masker.fwd_hooks()), plain)
        # hooks that run but block nothing (last->last is only the self edge, kept under "keep")
        plan = keep_all(8, always_blocked={"last_to_last": "all"}).plan(8, self_edges="keep")
        masker = PathwayMasker(inputs8.layout, plan)
        hooked = deep_model.run_with_hooks(inputs8, fwd_hooks=masker.fwd_hooks())
        assert masker.calls == 8 and masker.builds == 1
        assert torch.allclose(hooked, plain, atol=1e-5, rtol=0)
        with fast_attention(deep_model, False):  # TransformerLens' own path: bit for bit
            plain_tl = deep_model(inputs8)
            masker = PathwayMasker(inputs8.layout, plan)
            assert torch.equal(deep_model.run_with_hooks(inputs8, fwd_hooks=masker.fwd_hooks()), plain_tl)
            assert masker.calls == 8


@pytest.mark.parametrize("edge_type", ["cross_frame", "video_to_question", "question_to_last"])
def test_blocking_one_type_equals_its_knockout(deep_model, inputs8, edge_type):
    spec = spec_from_dict({"name": "one", "n_layers": 8, "kept": {edge_type: [[2, 4]]}})
    plan = spec.plan(8)
    layers = [0, 1, 5, 6, 7]
    assert [l for l in range(8) if plan.blocked_types(l)] == layers
    mask = blocked_mask(inputs8.layout, plan.pairs[edge_type])
    assert mask.any()
    hand = [(f"blocks.{l}.attn.hook_attn_scores", knockout_hook(mask)) for l in layers]
    with torch.no_grad():
        plain = deep_model(inputs8)
        ours = deep_model.run_with_hooks(inputs8, fwd_hooks=PathwayMasker(inputs8.layout, plan).fwd_hooks())
        ref = deep_model.run_with_hooks(inputs8, fwd_hooks=hand)
        assert torch.allclose(ours, ref, atol=1e-5, rtol=0)  # ours on the SDPA path, ref on the plain one
        assert not torch.allclose(ours, plain, atol=1e-4)
        with fast_attention(deep_model, False):
            ours = deep_model.run_with_hooks(inputs8, fwd_hooks=PathwayMasker(inputs8.layout, plan).fwd_hooks())
            assert torch.equal(ours, deep_model.run_with_hooks(inputs8, fwd_hooks=hand))


def test_shipped_spec_equals_its_union_knockout(deep_model, inputs8):
    plan = load_spec("llava-next-7b-video-ft").plan(8)
    hand = []
    for l in range(8):
        if plan.blocked_pairs(l):
            hand.append((f"blocks.{l}.attn.hook_attn_scores", knockout_hook(blocked_mask(inputs8.layout, plan.blocked_pairs(l)))))
    with torch.no_grad(), fast_attention(deep_model, False):
        masker = PathwayMasker(inputs8.layout, plan)
        ours = deep_model.run_with_hooks(inputs8, fwd_hooks=masker.fwd_hooks())
        assert torch.equal(ours, deep_model.run_with_hooks(inputs8, fwd_hooks=hand))
    runs = sum(1 for l in range(8) if plan.blocked_types(l) and (l == 0 or plan.blocked_types(l) != plan.blocked_types(l - 1)))
    assert masker.builds == runs


def test_counts_on_a_real_prompt_layout_match_brute_force(inputs8):
    from test_pathways_counts import brute_kept

    plan = load_spec("llava-next-7b-video-ft").plan(8)
    assert list(count_edges(inputs8.layout, plan).kept) == brute_kept(inputs8.layout, plan)


def test_evaluate_sample_records(deep_model, inputs8):
    spec = load_spec("llava-next-7b-video-ft")
    recs = evaluate_sample(deep_model, inputs8, spec, random_control=True, seed=0)
    by = {r["condition"]: r for r in recs}
    assert list(by) == ["full", "pathways", "random"]
    assert by["full"]["answer"] == deep_model.answer(inputs8)
    assert by["full"]["truth"] == "C"
    counts = count_edges(inputs8.layout, spec.plan(8))
    S = inputs8.seq_len
    assert by["full"]["edges_full"] == by["full"]["edges_kept"] == 8 * S * (S + 1) // 2
    assert by["pathways"]["kept_per_layer"] == list(counts.kept)
    assert by["pathways"]["edges_kept"] == counts.total_kept
    # the official random control: int(ratio x S(S+1)/2) edges in every layer (ratio 0.58 for the 7B),
    # at most the eligible ones (rows and columns from the video start, diagonal included)
    n = S - inputs8.layout.video.start
    n_block = min(int(S * (S + 1) // 2 * 0.58), n * (n + 1) // 2)
    assert by["random"]["kept_per_layer"] == [S * (S + 1) // 2 - n_block] * 8
    layer = evaluate_sample(deep_model, inputs8, spec, random_control=True, match="layer")[2]
    assert layer["kept_per_layer"] == list(counts.kept)  # the matched control: same number per layer
    assert by["full"]["rel_change"] == 0.0 and by["pathways"]["base_argmax_t"] == by["full"]["argmax_t"]
    for r in recs:
        assert r["correct"] == (r["answer"] == r["truth"])
        assert set(r["probs"]) == {"A", "B", "C", "D"}
    # random control: same seed -> same answer probabilities; another seed -> other ones (the matched
    # control: on this short prompt the official ratio asks for every eligible edge, so no seed matters)
    once = evaluate_sample(deep_model, inputs8, spec, random_control=True, seed=0, match="layer")[2]
    again = evaluate_sample(deep_model, inputs8, spec, random_control=True, seed=0, match="layer")[2]
    other = evaluate_sample(deep_model, inputs8, spec, random_control=True, seed=1, match="layer")[2]
    assert again["probs"] == once["probs"]
    assert other["probs"] != once["probs"]
    total = evaluate_sample(deep_model, inputs8, spec, random_control=True, match="total")[2]
    assert total["edges_kept"] == counts.total_kept
    assert max(total["kept_per_layer"]) - min(total["kept_per_layer"]) <= 1


def write_dataset(tmp_path, clip_path):
    files = []
    for task, qas in (("action_sequence", QA[:2]), ("moving_direction", QA[1:])):
        entries = [dict(video=clip_path.name, **qa) for qa in qas]
        p = tmp_path / f"{task}.json"
        p.write_text(json.dumps(entries))
        files.append(p)
    return files


def test_evaluate_and_summary(tiny_pllava, clip_path, tmp_path):
    files = write_dataset(tmp_path, clip_path)
    samples = [s for f in files for s in vl.load_tvbench(f, clip_path.parent)]
    recs = evaluate(tiny_pllava, samples, "videollama3-7b", random_control=True, progress=False)
    assert len(recs) == 3 * len(samples)
    rows = summarize(recs)
    assert [(r["task"], r["condition"]) for r in rows] == [
        (t, c) for t in ("action_sequence", "moving_direction", "overall") for c in ("full", "pathways", "random")]
    truth = {s.sample_id: s.answer_letter for s in samples}
    full_answers = {s.sample_id: tiny_pllava.answer(tiny_pllava.prepare(s)) for s in samples}
    for row in rows:
        mine = [r for r in recs if r["condition"] == row["condition"] and row["task"] in ("overall", r["task"])]
        assert row["n"] == len(mine)
        assert row["accuracy"] == pytest.approx(100 * sum(r["answer"] == truth[r["sample_id"]] for r in mine) / len(mine))
        full_row = next(x for x in rows if x["task"] == row["task"] and x["condition"] == "full")
        assert row["delta_vs_full"] == pytest.approx(row["accuracy"] - full_row["accuracy"])
        assert row["video_tokens"] == "4x4x4"
    overall_full = next(r for r in rows if r["task"] == "overall" and r["condition"] == "full")
    assert overall_full["accuracy"] == pytest.approx(100 * sum(full_answers[s] == truth[s] for s in truth) / len(truth))
    assert overall_full["kept_fraction"] == 1.0
    pw = next(r for r in rows if r["task"] == "overall" and r["condition"] == "pathways")
    assert 0 < pw["kept_fraction"] < 1


def test_cli(tiny_pllava_dir, clip_path, tmp_path, capsys):
    from videolens import cli
    from videolens.commands import pathways as cmd

    assert "videolens.commands.pathways" in cli.COMMANDS
    files = write_dataset(tmp_path, clip_path)
    out = tmp_path / "run"

    def run(*extra):
        p = argparse.ArgumentParser()
        cmd.add_arguments(p)
        args = p.parse_args(["--model", str(tiny_pllava_dir), "--spec", "llava-next-7b-video-ft", "--data",
                             *map(str, files), "--video-root", str(clip_path.parent), "--random-control",
                             "--out", str(out), "--no-progress", *extra])
        return cmd.run(args)

    assert run("--limit", "1") == 0
    printed = capsys.readouterr().out
    assert "| condition | video tokens | edges kept | accuracy | vs full causal |" in printed
    first = read_records(out / "records.jsonl")
    assert len(first) == 2 * 3  # 1 sample per file x 3 conditions
    assert run("--limit", "2") == 0  # resumes: only the new samples run
    second = read_records(out / "records.jsonl")
    assert len(second) == 4 * 3 and second[:6] == first
    assert run("--limit", "2") == 0
    assert read_records(out / "records.jsonl") == second
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["task"] for r in rows} == {"action_sequence", "moving_direction", "overall"}
    assert {r["condition"] for r in rows} == {"full", "pathways", "random"}
    assert "edges kept" in (out / "summary.md").read_text()
    assert (out / "pathways.png").stat().st_size > 10_000
    with pytest.raises(RunConfigMismatch):
        run("--seed", "5")
    with pytest.raises(FileNotFoundError, match="shipped specs"):
        p = argparse.ArgumentParser()
        cmd.add_arguments(p)
        cmd.run(p.parse_args(["--spec", "nope", "--data", str(files[0]), "--video-root", ".", "--out", str(out)]))


def test_the_pathway_figures_leave_the_callers_matplotlib_backend_alone(tmp_path):
    import matplotlib

    from videolens.plots.pathways import plot_summary

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # not Agg: the old code switched every caller to Agg
    rows = [{"task": t, "condition": c, "accuracy": a, "edges_kept_text": "10 of 20"}
            for t in ("overall", "moving_direction") for c, a in (("full", 90.0), ("pathway", 80.0))]
    records = [{"condition": c, "kept_per_layer": [5, 5], "edges_full": 20, "n_layers": 2} for c in ("full", "pathway")]
    try:
        path = plot_summary(records, rows, tmp_path / "p.png")
        assert path.stat().st_size > 5_000 and matplotlib.get_backend() == "svg"  # a notebook's inline backend stays
    finally:
        matplotlib.use(before)
