"""Checkpoint families: registry, key accounting, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import videolens as vl
from weights_conversion import FAMILIES, MissingWeightsError, UnexpectedWeightsError, UnknownFamilyError
from weights_conversion.checkpoint import CheckpointError


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_registry_has_both_families():
    assert FAMILIES["pllava"].name == "pllava"
    assert FAMILIES["llava_next_video"].name == "llava_next_video"
    for key in ("llava/PllavaForConditionalGeneration", "llava/LlavaForConditionalGeneration",
                "llava_next/LlavaNextForConditionalGeneration"):
        assert FAMILIES[key].name == "pllava"  # the official loader's classes


@pytest.mark.parametrize("model_type,archs", [("llava", ["MysteryForConditionalGeneration"]), ("llava", []),
                                              ("llava_next", ["LlavaNextVideoForConditionalGeneration"])])
def test_architectures_no_family_handles(tiny_pllava_dir, tmp_path, model_type, archs):
    ck = _copy(tiny_pllava_dir, tmp_path / "ck")
    cfg = json.loads((ck / "config.json").read_text())
    cfg.update(model_type=model_type, architectures=archs)
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnknownFamilyError) as err:
        vl.HookedVideoLLM.from_pretrained(ck, device="cpu")
    msg = str(err.value)
    assert f"model_type {model_type!r} with architectures {archs}" in msg and "\n" not in msg
    assert f"supported architectures for {model_type!r}: [" in msg
    assert ("PllavaForConditionalGeneration" if model_type == "llava" else "LlavaNextForConditionalGeneration") in msg


def test_cli_names_an_unsupported_architecture_in_one_line(tiny_pllava_dir, tmp_path, clip_path, capsys):
    from videolens.cli import main

    ck = _copy(tiny_pllava_dir, tmp_path / "ck")
    cfg = json.loads((ck / "config.json").read_text())
    cfg.update(model_type="llava", architectures=["MysteryForConditionalGeneration"])
    (ck / "config.json").write_text(json.dumps(cfg))
    rc = main(["answer", "--model", str(ck), "--video", str(clip_path), "--question", "Q?", "--candidates", "a", "b"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "MysteryForConditionalGeneration" in err
    assert "Traceback" not in err


def test_pooling_shape_and_num_frames_override(tiny_pllava_dir, clip_path):
    model = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", pooling_shape=(2, 3, 3))
    assert model.default_num_frames == 2 and model.vision.output_grid(2) == (2, 3, 3)
    inputs = model.prepare(vl.VideoQA(video=str(clip_path), question="What is the bird doing?",
                                      candidates=["It sleeps.", "It flies away."], answer="It sleeps."))
    assert inputs.video.num_frames == 2 and tuple(inputs.video_embeds.shape[:3]) == (2, 3, 3)
    m = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", pooling_shape=(4, 2, 2), num_frames=6)
    assert m.default_num_frames == 6


def test_unknown_model_type_lists_supported(tmp_path, tiny_pllava_dir):
    ck = _copy(tiny_pllava_dir, tmp_path / "x")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["model_type"] = "mystery_vlm"
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnknownFamilyError, match=r"mystery_vlm.*pllava.*llava_next_video|mystery_vlm.*llava_next_video.*pllava"):
        vl.HookedVideoLLM.from_pretrained(ck, device="cpu")


def _drop(key):
    return lambda sd: sd.pop(key)


def _set(key, value):
    return lambda sd: sd.__setitem__(key, value)


@pytest.mark.parametrize("edit,error,pattern", [
    (_drop("language_model.model.layers.1.mlp.up_proj.weight"), MissingWeightsError,
     r"language_model\.model\.layers\.1\.mlp\.up_proj\.weight"),
    (_drop("multi_modal_projector.linear_2.weight"), MissingWeightsError, r"multi_modal_projector\.linear_2\.weight"),
    (_set("language_model.model.layers.0.self_attn.q_porj.weight", torch.zeros(2, 2)), UnexpectedWeightsError,
     r"q_porj"),
    (_set("multi_modal_projector.linear_1.weight", torch.zeros(3, 3)), CheckpointError, r"linear_1\.weight has shape"),
], ids=["missing-text", "missing-vision", "unexpected", "wrong-shape"])
def test_bad_tensors_are_named(tmp_path, tiny_pllava_dir, edit, error, pattern):
    ck = _copy(tiny_pllava_dir, tmp_path / "x")
    sd = load_file(str(ck / "model.safetensors"))
    edit(sd)
    save_file(sd, str(ck / "model.safetensors"))
    with pytest.raises(error, match=pattern):
        vl.HookedVideoLLM.from_pretrained(ck, device="cpu")


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(FileNotFoundError):
        vl.HookedVideoLLM.from_pretrained(tmp_path / "nothing", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        vl.HookedVideoLLM.from_pretrained(tmp_path / "empty", device="cpu")


def test_context_length_error_before_compute(tmp_path, clip_path, monkeypatch):
    from videolens.testing import make_tiny_pllava

    ck = make_tiny_pllava(tmp_path / "short_ctx", max_pos=64)
    model = vl.HookedVideoLLM.from_pretrained(ck, device="cpu")
    called = []
    monkeypatch.setattr(model.vision, "forward", lambda *a, **k: called.append(1))
    sample = vl.VideoQA(video=str(clip_path), question="What did the person do first?",
                        candidates=["Put down the blanket.", "Took the towel."], answer="Took the towel.")
    with pytest.raises(vl.ContextLengthError, match="64"):
        model.prepare(sample)
    assert not called


def test_hooks_and_cache_work_as_in_transformer_lens(tiny_pllava, clip_path):
    sample = vl.VideoQA(video=str(clip_path), question="What did the person do first?",
                        candidates=["Put down the blanket.", "Took the towel."], answer="Took the towel.")
    inputs = tiny_pllava.prepare(sample)
    logits, cache = tiny_pllava.run_with_cache(inputs)
    v = inputs.layout.video_positions
    # video embeddings sit in hook_embed at the video positions, and in the vision hook
    assert torch.allclose(cache["hook_embed"][0, v], inputs.video_embeds.reshape(-1, 64))
    assert cache["vision.hook_video_embeds"].shape == (1, 4, 4, 4, 64)
    acc = cache.accumulated_resid(incl_mid=False, apply_ln=False)
    assert acc.shape[0] == tiny_pllava.cfg.n_layers + 1
    dec, labels = cache.decompose_resid(return_labels=True)
    assert torch.allclose(dec.sum(0), cache[f"blocks.{tiny_pllava.cfg.n_layers - 1}.hook_resid_post"], atol=1e-5)
    # patching the video embeddings through the vision hook changes the answer distribution
    zero = lambda x, hook: torch.zeros_like(x)
    patched = tiny_pllava.run_with_hooks(inputs, fwd_hooks=[("vision.hook_video_embeds", zero)])
    assert not torch.allclose(patched, logits)
    probs = tiny_pllava.option_probs(inputs)
    full = logits[0, -1].detach().softmax(-1)
    assert probs["A"] == pytest.approx(float(full[inputs.option_token_ids["A"]]), rel=1e-5)
    assert isinstance(tiny_pllava.generate(inputs, max_new_tokens=2), str)


def test_stacked_inputs_equal_one_by_one(tiny_pllava, clip_path, tmp_path):
    from videolens.testing import write_clip
    from videolens.prompting.inputs import stack_inputs

    other = write_clip(tmp_path / "other.mp4", seed=3)
    samples = [vl.VideoQA(video=str(p), question="What did the person do first?",
                          candidates=["Put down the blanket.", "Took the towel."], answer="Took the towel.")
               for p in (clip_path, other)]
    inputs = [tiny_pllava.prepare(s) for s in samples]
    with torch.no_grad():
        batched = tiny_pllava(stack_inputs(inputs))
        single = torch.cat([tiny_pllava(x) for x in inputs])
    assert not torch.allclose(single[0], single[1])  # different videos, different logits
    assert torch.allclose(batched, single, atol=1e-5)
    short = vl.VideoQA(video=str(clip_path), question="What is the bird doing?",
                       candidates=["It sleeps.", "It flies away."], answer="It sleeps.")
    padded = stack_inputs([inputs[0], tiny_pllava.prepare(short)])  # other lengths: left-padded with a mask
    assert padded.attention_mask is not None and padded.row_layouts is not None


def test_qwen2_without_grouped_kv_heads(tmp_path, clip_path):
    """A Qwen2 backbone whose key/value heads equal its query heads (LLaVA-OneVision-0.5B's shape)
    loads and matches transformers (TransformerLens' Qwen2 converter needs n_key_value_heads set)."""
    from families import pllava_reference
    from videolens.testing import make_tiny_pllava

    ckpt = make_tiny_pllava(tmp_path / "mha", text="qwen2", n_kv_heads=4)
    model = vl.HookedVideoLLM.from_pretrained(ckpt, device="cpu")
    x = model.prepare(vl.VideoQA(video=str(clip_path), question="What moves?", candidates=["A square.", "A dot."],
                                 answer="A square."), num_frames=8)
    ref, _, _ = pllava_reference(ckpt, x.video.frames, x.tokens, model.placeholder_id)
    with torch.no_grad():
        assert (model(x) - ref).abs().max() <= 1e-4


def test_weights_from_memory_equal_the_files(tiny_pllava_dir, tmp_path, clip_path):
    """``from_pretrained(folder, state_dict=...)``: a folder with config.json and the tokenizer only,
    the tensors from memory (a model of a released shape built on a GPU): the same logits as the
    files, no fingerprint, and a missing tensor named as from memory."""
    from weights_conversion.checkpoint import read_state_dict

    bare = tmp_path / "bare"
    shutil.copytree(tiny_pllava_dir, bare, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
    tensors = read_state_dict(tiny_pllava_dir)
    from_files = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu")
    from_memory = vl.HookedVideoLLM.from_pretrained(bare, device="cpu", state_dict=tensors)
    sample = vl.VideoQA(video=str(clip_path), question="What moves?", candidates=["a ball", "a box"], answer="a ball")
    x = from_files.prepare(sample)
    assert torch.equal(from_memory(from_memory.prepare(sample)), from_files(x))
    assert from_memory.checkpoint_path is None and from_memory.fingerprint is None
    assert from_files.fingerprint is not None
    with pytest.raises(CheckpointError, match="in-memory tensors"):
        vl.HookedVideoLLM.from_pretrained(bare, device="cpu", state_dict={k: v for k, v in tensors.items()
                                                                         if "layers.1." not in k})
    with pytest.raises(CheckpointError, match="holds no weights"):  # the bare folder alone has none
        vl.HookedVideoLLM.from_pretrained(bare, device="cpu")
