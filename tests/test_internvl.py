"""Mini-InternVL beyond the shared family suite: LongRoPE's two factor sets against transformers'
Phi-3 on both sides of the switch, and clear errors for configs the family cannot load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import videolens as vl
from videolens.testing import make_tiny_internvl, reference_language_model
from weights_conversion import CheckpointError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_internvl(tmp_path_factory.mktemp("internvl") / "m")  # original_max_position_embeddings 64


@pytest.mark.parametrize("n", [40, 64, 65, 200])
def test_longrope_tables_match_transformers_on_both_sides(ckpt, n):
    model = vl.HookedVideoLLM.from_pretrained(ckpt, device="cpu")
    ref = reference_language_model(ckpt)
    tokens = torch.arange(5, 5 + n)[None] % 380
    with torch.no_grad():
        ours, theirs = model(tokens), ref(tokens).logits
    assert model.rope_switch.current == ("long" if n > 64 else "short")
    assert (ours - theirs).abs().max() <= 1e-4
    with torch.no_grad():  # a short prefix after a long run switches back (tables are per forward)
        assert (model(tokens[:, :30]) - ref(tokens[:, :30]).logits).abs().max() <= 1e-4


def test_below_the_switch_equals_transformers_internvl(tmp_path, clip_path):
    """The shared family case takes the long factors (its prompt passes original_max 64); here the same
    model with original_max 256 keeps the short ones, against InternVLForConditionalGeneration."""
    from families import internvl_reference

    ck = make_tiny_internvl(tmp_path / "short", original_max_positions=256)
    model = vl.HookedVideoLLM.from_pretrained(ck, device="cpu")
    inputs = model.prepare(vl.VideoQA(video=str(clip_path), question="What moves?", candidates=["left", "right"],
                                      answer="left"), num_frames=8)
    logits_ref, _, _ = internvl_reference(ck, model, inputs)
    with torch.no_grad():
        logits = model(inputs)
    assert model.rope_switch.current == "short" and inputs.seq_len <= 256
    assert (logits - logits_ref).abs().max() <= 1e-4


def _edit(src, dst, change):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    change(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("change,message", [
    (lambda c: c.update(ps_version="v1"), "ps_version 'v1' is not supported (v2)"),
    (lambda c: c.update(downsample_ratio=0.25), "downsample_ratio 0.25 is not supported (0.5)"),
    (lambda c: c["llm_config"].update(model_type="internlm2"), "text_config.model_type 'internlm2' is not a supported text backbone; supported: ['llama', 'mistral', 'phi3', 'qwen2', 'qwen3']"),
    (lambda c: c.pop("llm_config"), "the internvl_chat config needs 'llm_config'"),
])
def test_configs_the_family_cannot_load_say_why(ckpt, tmp_path, change, message):
    bad = _edit(ckpt, tmp_path / "bad", change)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        vl.HookedVideoLLM.from_pretrained(bad, device="cpu")


def test_cli_runs_end_to_end(ckpt, clip_path, tmp_path):
    from test_bad_inputs import run_cli

    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"video": clip_path.name, "question": "What moves?", "candidates": ["left", "right"],
                                 "answer": "left"}]))
    rc, out, err = run_cli(["answer", "--model", str(ckpt), "--video", str(clip_path), "--question", "What moves?",
                            "--candidates", "left", "right", "--json"])
    assert rc == 0, err
    assert set(json.loads(out.strip().splitlines()[-1])["probs"]) == {"A", "B"}
    common = ["--model", str(ckpt), "--data", str(data), "--video-root", str(clip_path.parent), "--no-figures",
              "--no-progress"]
    rc, _, err = run_cli(["flow", *common, "--target", "cross-frame", "--samples", "all", "--out", str(tmp_path / "f")])
    assert rc == 0 and "window not given: 3" in err, err
    rc, out, err = run_cli(["pathways", *common, "--spec", "mini-internvl-4b-video-ft", "--out", str(tmp_path / "p")])
    assert rc == 0 and "| overall |" in out, err


def test_internvl_in_transformers_format_answers_a_real_video_through_the_cli(tmp_path, cockatoo):
    from conftest import assert_answers_through_the_cli
    from videolens.testing import make_tiny_internvl_hf

    assert_answers_through_the_cli(make_tiny_internvl_hf(tmp_path / "ivl-hf"), cockatoo)
