"""Pathway-pruned inference (``videolens.pathways.pruned``): dropping the video rows from the layer
on which no kept position reads them gives the masked run's answer (1e-4 in fp32), on a Llama
backbone with plain RoPE and on Qwen2.5-VL's per-input M-RoPE tables."""

from __future__ import annotations

import contextlib

import pytest
import torch

import videolens as vl
from videolens.pathways import load_spec
from videolens.pathways import pruned as P
from videolens.pathways.hooks import PathwayMasker
from videolens.testing import make_tiny_pllava, make_tiny_qwen2_5_vl

from conftest import SAMPLE  # noqa: E402 (the shared two-option question)
SPEC = {"name": "early-video", "n_layers": 6, "kept": {"cross_frame": [[0, 1]], "video_to_question": [[0, 2]],
                                                        "question_to_last": [[2, 5]]},
        "always_blocked": {"video_to_last": "all", "video_to_video": {"after": "video_to_question"}}}


@pytest.fixture(scope="module", params=["pllava", "qwen2_5_vl"])
def case(request, tmp_path_factory, clip_path):
    d = tmp_path_factory.mktemp(request.param)
    ckpt = (make_tiny_pllava(d / "ckpt", n_layers=6) if request.param == "pllava"
            else make_tiny_qwen2_5_vl(d / "ckpt", n_layers=6))
    model = vl.HookedVideoLLM.from_pretrained(ckpt, device="cpu")
    inputs = model.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE), num_frames=4)
    return model, inputs


def _masked(model, inputs, plan):
    with torch.no_grad():
        return model.run_with_hooks(inputs, fwd_hooks=PathwayMasker(inputs.layout, plan).fwd_hooks())[:, -1:]


def test_pruned_equals_the_masked_run(case):
    model, inputs = case
    plan = P.prunable(SPEC).plan(model.cfg.n_layers)
    assert P.prune_layer(inputs.layout, plan) == 3  # video rows leave after the last video_to_question layer
    ref = _masked(model, inputs, plan)
    got = P.pruned_logits(model, inputs, plan)
    assert got.shape == (1, 1, model.cfg.d_vocab)
    assert (got - ref).abs().max() <= 1e-4
    assert (ref - model(inputs)[:, -1:]).abs().max() > 1e-3  # the spec changes the answer's logits


def test_without_reindexed_rotary_tables_the_answer_moves(case, monkeypatch):
    """The kept rows keep their own RoPE positions; rotating them as 0..S'-1 is another model."""
    model, inputs = case
    plan = P.prunable(SPEC).plan(model.cfg.n_layers)
    ref = _masked(model, inputs, plan)
    monkeypatch.setattr(P, "_reindexed_rotary", lambda *a: contextlib.nullcontext())
    assert (P.pruned_logits(model, inputs, plan) - ref).abs().max() > 1e-3


def test_the_papers_specs_read_the_video_in_every_layer(case):
    """The paper's specs keep the text outside their groups (USER:, the instruction, the answer
    prefix) reading the video in every layer: nothing can be pruned, pruned_logits is the masked run."""
    model, inputs = case
    for name in ("llava-next-7b-video-ft", "videollama3-7b"):
        plan = load_spec(name).plan(model.cfg.n_layers)
        assert P.prune_layer(inputs.layout, plan) is None
        assert torch.equal(P.pruned_logits(model, inputs, plan), _masked(model, inputs, plan))
        variant = P.prunable(name)
        assert variant.name == name + P.PRUNABLE_SUFFIX and P.prune_layer(inputs.layout, variant.plan(6)) is not None


def test_prunable_keeps_the_video_where_the_spec_reads_it():
    spec = P.prunable({**SPEC, "kept": {**SPEC["kept"], "video_to_last": [[4, 5]]},
                       "always_blocked": {"video_to_video": {"after": "video_to_question"}}})
    assert "video_to_text" not in spec.always_blocked  # video->last kept to the end: nothing to prune
    assert P.prunable(P.prunable(SPEC)).name == "early-video" + P.PRUNABLE_SUFFIX


def test_pathways_prune_cli_on_the_bundled_model(tmp_path):
    """``videolens pathways --prune``: the prunable variant, computed pruned, gives the masked run's
    probabilities (evaluated here without pruning)."""
    from videolens.cli import main
    from videolens.sources.formats import load_annotations
    from videolens.pathways import evaluate
    from videolens.running.records import read_records
    from videolens.sources.synthetic import write_dataset

    files = write_dataset(tmp_path / "data", n_per_task=2, seed=11, tasks=["moving_direction"])
    out = tmp_path / "pw"
    assert main(["pathways", "--spec", "llava-next-7b-video-ft", "--prune", "--data", str(files["moving_direction"]),
                 "--video-root", str(tmp_path / "data" / "videos"), "--out", str(out), "--device", "cpu",
                 "--no-progress", "--no-figures"]) == 0
    recs = [r for r in read_records(out / "records.jsonl") if r.get("condition") == "pathways"]
    assert len(recs) == 2 and all(r["pruned_from_layer"] == 4 for r in recs)
    model = vl.HookedVideoLLM.from_pretrained("tiny-videollm", device="cpu")
    samples = load_annotations(files["moving_direction"], video_root=tmp_path / "data" / "videos")
    ref = [r for r in evaluate(model, samples, P.prunable("llava-next-7b-video-ft"), random_control=False,
                               progress=False) if r["condition"] == "pathways"]
    for a, b in zip(sorted(recs, key=lambda r: r["sample_id"]), sorted(ref, key=lambda r: r["sample_id"])):
        assert abs(a["p_true"] - b["p_true"]) < 1e-4 and a["answer"] == b["answer"]
