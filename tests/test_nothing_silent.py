"""Nothing silently wrong, nothing lost (issue 30): each test here failed on the code before it.

Runs: a bad window is one sample's skip; the model fingerprint covers every byte; a damaged
records line reruns its sample; replaced videos rerun their samples."""

from __future__ import annotations

import dataclasses
import json

import pytest

from test_bad_inputs import run_cli
from test_reliability import SIZES, GOOD, flow_argv, write_data
from videolens.running.records import read_records, read_statuses
from videolens.testing import make_tiny_pllava, write_clip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("silent")
    write_clip(root / "clip.mp4", n_frames=8)
    return {"root": root, "model": make_tiny_pllava(root / "model", **SIZES)}


@pytest.mark.parametrize("command", ["flow", "genprob"])
def test_a_window_past_the_video_end_is_that_samples_skip(world, tmp_path, command):
    data = write_data(tmp_path / "d.json", [GOOD, dict(GOOD, start=50, end=60), GOOD])
    out = tmp_path / "out"
    argv = flow_argv(world, data, out)
    if command == "genprob":
        argv = ["genprob", "--model", str(world["model"]), "--data", str(data), "--video-root", str(world["root"]),
                "--out", str(out), "--no-figures", "--no-progress"]
    rc, stdout, err = run_cli(argv)
    assert rc == 0, err
    name = "records.jsonl" if command == "flow" else "genprob.jsonl"
    st = read_statuses(out / name)
    assert st == {"d_0": "ok", "d_1": "skipped: VideoWindowError", "d_2": "ok"}
    assert "d_1" in err and "past the end of" in err and "clip.mp4" in err
    assert run_cli(argv)[0] == 0  # a resume does not stop at the same entry either


def test_weights_changed_in_the_middle_are_a_new_model(world, tmp_path):
    """Same size, same first and last MiB, other bytes in the middle: another model."""
    from videolens.fingerprint import file_digest, model_fingerprint

    f = tmp_path / "model.safetensors"
    blob = bytearray(b"\0" * (3 << 20))
    f.write_bytes(bytes(blob))
    before = file_digest(f)
    assert file_digest(f) == before  # cached: same answer
    blob[(3 << 20) // 2] = 1
    f.write_bytes(bytes(blob))
    assert file_digest(f) != before
    (tmp_path / "config.json").write_text("{}")
    assert set(model_fingerprint(tmp_path)) == {"config.json", "model.safetensors"}


def test_loading_hashes_no_weights_until_a_run_needs_the_fingerprint(world, monkeypatch):
    import videolens as vl
    from videolens import fingerprint

    hashed = []
    real = fingerprint._sha256
    monkeypatch.setattr(fingerprint, "_MEMORY", {})
    monkeypatch.setattr(fingerprint, "_cached", lambda key: None)  # as on a first load
    monkeypatch.setattr(fingerprint, "_sha256", lambda path, size: hashed.append(path.name) or real(path, size))
    m = vl.HookedVideoLLM.from_pretrained(world["model"], device="cpu")
    assert "model.safetensors" not in hashed  # a load reads only each weight file's ends (quick_identity)
    assert set(m.fingerprint) >= {"config.json", "model.safetensors"} and "model.safetensors" in hashed


def test_a_run_header_says_what_the_fingerprint_covers(world, tmp_path):
    data = write_data(tmp_path / "d.json", [GOOD])
    assert run_cli(flow_argv(world, data, tmp_path / "out"))[0] == 0
    header = json.loads((tmp_path / "out" / "records.jsonl").read_text().splitlines()[0])["config"]
    assert header["fingerprint_method"] == "sha256 of every whole file"


def _lines(path):
    return path.read_text().splitlines()


def test_a_damaged_middle_line_reruns_its_sample(world, tmp_path):
    data = write_data(tmp_path / "d.json", [GOOD, dict(GOOD, question="What else moves?"), GOOD])
    out = tmp_path / "out"
    argv = flow_argv(world, data, out)
    assert run_cli(argv)[0] == 0
    path = out / "records.jsonl"
    before = read_records(path)
    per_sample = {sid: sum(r["sample_id"] == sid for r in before) for sid in ("d_0", "d_1", "d_2")}
    lines = _lines(path)
    i = next(i for i, l in enumerate(lines) if json.loads(l).get("sample_id") == "d_1" and not json.loads(l).get("_done"))
    lines[i + 1] = lines[i + 1][: len(lines[i + 1]) // 2]  # a damaged record inside d_1
    path.write_text("".join(l + "\n" for l in lines))
    with pytest.warns(UserWarning, match="d_1"):
        assert "d_1" not in read_statuses(path)  # never read as finished with a record missing
    rc, _, err = run_cli(argv)
    assert rc == 0, err
    assert "damaged" in err and "d_1" in err
    after = read_records(path)
    assert {sid: sum(r["sample_id"] == sid for r in after) for sid in per_sample} == per_sample


def test_a_damaged_header_is_refused(world, tmp_path):
    from videolens.running.records import RecordWriter, RunConfigMismatch

    p = tmp_path / "r.jsonl"
    with RecordWriter(p, {"a": 1}) as w:
        w.write_sample("x", [{"v": 1}])
    lines = _lines(p)
    p.write_text("".join(l + "\n" for l in ["{oops", *lines[1:]]))
    with pytest.raises(RunConfigMismatch, match="first line"):
        RecordWriter(p, {"a": 1})


def test_a_replaced_video_reruns_its_samples(world, tmp_path):
    import os

    root = tmp_path / "videos"
    root.mkdir()
    write_clip(root / "clip.mp4", n_frames=8)
    write_clip(root / "other.mp4", n_frames=8)
    data = write_data(tmp_path / "d.json", [GOOD, dict(GOOD, video="other.mp4")])
    out = tmp_path / "out"
    argv = flow_argv(dict(world, root=root), data, out)
    assert run_cli(argv)[0] == 0
    write_clip(root / "other.mp4", n_frames=8, seed=5)
    st = (root / "other.mp4").stat()
    os.utime(root / "other.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rc, _, err = run_cli(argv)
    assert rc == 0, err
    assert "d_1: its video changed" in err and "d_0" not in err
    recs = read_records(out / "records.jsonl")
    ids = [r["sample_id"] for r in recs]
    assert ids.count("d_0") == ids.count("d_1")  # the old records of d_1 are gone, not mixed in


def _edit_vocab(model_dir, change):
    tj = json.loads((model_dir / "tokenizer.json").read_text())
    change(tj["model"]["vocab"])
    (model_dir / "tokenizer.json").write_text(json.dumps(tj))


@pytest.mark.parametrize("change,expected", [
    (lambda v: [v.pop(L) for L in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"], "are the unknown token"),
    (lambda v: v.update(What=10_000), "lie outside the embedding"),
], ids=["letters-unknown", "ids-past-embedding"])
def test_a_tokenizer_that_does_not_fit_is_refused_at_load(world, tmp_path, change, expected):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(world["model"], d)
    _edit_vocab(d, change)
    rc, out, err = run_cli(["answer", "--model", str(d), "--video", str(world["root"] / "clip.mp4"),
                            "--question", "What moves?", "--candidates", "left", "right"])
    assert rc == 2 and "the tokenizer does not fit the model" in err and expected in err, err
    assert "Traceback" not in err


def test_token_ids_past_the_embedding_raise_in_one_line(world):
    import torch

    import videolens as vl
    from videolens.errors import TokenizerMismatchError

    m = vl.HookedVideoLLM.from_pretrained(world["model"], device="cpu")
    with pytest.raises(TokenizerMismatchError, match="outside the embedding"):
        m(torch.tensor([[1, m.cfg.d_vocab + 3]]))


# ---- NaN, batches, clean runs (items 5-7) ---------------------------------------------------------
NAN_HOOK = [("blocks.0.hook_resid_post", lambda act, hook: act * float("nan"))]


@pytest.fixture(scope="module")
def two(tiny_pllava, clip_path):
    """Two prepared samples of one length whose true answers differ, and a shorter third."""
    import videolens as vl
    from conftest import DIRECTION_CANDIDATES, DIRECTION_QUESTION

    a = tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), question=DIRECTION_QUESTION,
                                       candidates=DIRECTION_CANDIDATES, answer=DIRECTION_CANDIDATES[0]))
    b = tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), question=DIRECTION_QUESTION,
                                       candidates=DIRECTION_CANDIDATES, answer=DIRECTION_CANDIDATES[2]))
    b = b.with_video_embeds(b.video_embeds.flip(0).contiguous())  # another video
    short = tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), question="What moves?",
                                           candidates=["left", "right", "up"], answer="up"))
    return a, b, short


@pytest.mark.parametrize("analysis", ["logit_lens", "answer_probability_by_layer", "sweep", "generate"])
def test_non_finite_analyses_raise(tiny_pllava, two, analysis):
    import videolens as vl
    from videolens.errors import NonFiniteError

    fn = {"generate": lambda: tiny_pllava.generate(two[0], max_new_tokens=2),
          "logit_lens": lambda: vl.lens.logit_lens(tiny_pllava, two[0], positions="video"),
          "answer_probability_by_layer": lambda: vl.lens.answer_probability_by_layer(tiny_pllava, two[0]),
          "sweep": lambda: vl.knockout.sweep(tiny_pllava, two[0], "cross-frame", window=1, layers=[0])}[analysis]
    with tiny_pllava.hooks(fwd_hooks=NAN_HOOK), pytest.raises(NonFiniteError, match="NaN/inf"):
        fn()


@pytest.mark.parametrize("analysis", ["logit_lens", "answer_probability_by_layer", "sweep"])
def test_one_sample_analyses_refuse_a_batch(tiny_pllava, two, analysis):
    import videolens as vl
    from videolens.errors import BatchedInputError
    from videolens.prompting.inputs import stack_inputs

    batch = stack_inputs(two[:2])
    fn = {"logit_lens": lambda: vl.lens.logit_lens(tiny_pllava, batch),
          "answer_probability_by_layer": lambda: vl.lens.answer_probability_by_layer(tiny_pllava, batch),
          "sweep": lambda: vl.knockout.sweep(tiny_pllava, batch, "cross-frame", window=1, layers=[0])}[analysis]
    with pytest.raises(BatchedInputError, match=r"pass batch\[i\]"):
        fn()


@pytest.mark.parametrize("name", ["patching.activation.patch_spans", "patching.path.path_patch",
                                  "patching.path.path_patch_heads", "pathways.evaluate.evaluate_sample",
                                  "knockout.attribution.edge_attribution", "viz.pooling.video_attention",
                                  "viz.compare.compare_knockout", "knockout.open_ended.open_ended_sweep",
                                  "pathways.pruned.pruned_logits"])
def test_every_one_sample_analysis_refuses_a_batch(tiny_pllava, two, name):
    import importlib

    from videolens.errors import BatchedInputError
    from videolens.prompting.inputs import stack_inputs

    module, fn = name.rsplit(".", 1)
    fn = getattr(importlib.import_module(f"videolens.{module}"), fn)
    import inspect

    required = [p for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty]
    args = [tiny_pllava, stack_inputs(two[:2])] + [None] * (len(required) - 2)
    with pytest.raises(BatchedInputError, match=r"pass batch\[i\]"):
        fn(*args)


def test_frame_corruptions_permute_each_rows_frames(tiny_pllava, two):
    import torch

    from videolens import corruptions
    from videolens.prompting.inputs import stack_inputs

    batch = stack_inputs(two[:2])
    for corrupt in (corruptions.reverse_frames, lambda x: corruptions.shuffle_frames(x, seed=1),
                    lambda x: corruptions.permute_frames(x, [1, 0] + list(range(2, x.layout.video_grid[0])))):
        both = corrupt(batch)
        for i in range(2):
            assert torch.equal(both.video_embeds[i], corrupt(two[i]).video_embeds)
            assert torch.allclose(tiny_pllava(both)[i], tiny_pllava(corrupt(two[i]))[0], atol=1e-4)
    with pytest.raises(Exception, match=r"batch\[i\]"):
        corruptions.replace_frame(batch, 1)


def test_rows_of_a_batch_keep_their_own_sample_and_labels(tiny_pllava, two):
    from videolens.prompting.inputs import stack_inputs

    a, b, short = two
    batch = stack_inputs([a, b])
    assert batch[1].layout.true_letter == b.layout.true_letter != a.layout.true_letter
    assert batch[1].sample is b.sample
    padded = stack_inputs([short, a])
    rows = tiny_pllava.to_str_tokens(padded)
    for i, x in enumerate((short, a)):
        own = tiny_pllava.to_str_tokens(x)
        assert rows[i][padded.seq_len - x.seq_len:] == own  # each row's video labels at its own positions
    assert padded[0].layout.true_letter == short.layout.true_letter


def test_a_clean_run_of_another_input_or_model_is_refused(tiny_pllava, two):
    import videolens as vl
    from videolens.knockout.engine import get_engine

    a, b, _ = two
    clean_b = get_engine("fast").clean(tiny_pllava, b)
    with pytest.raises(ValueError, match="another input"):
        vl.knockout.sweep(tiny_pllava, a, "cross-frame", window=1, layers=[0], clean=clean_b)
    with pytest.raises(ValueError, match="engine"):
        vl.knockout.sweep(tiny_pllava, b, "cross-frame", window=1, layers=[0], clean=clean_b, method="full")
    same = vl.knockout.sweep(tiny_pllava, b, "cross-frame", window=1, layers=[0], clean=clean_b)
    assert same == vl.knockout.sweep(tiny_pllava, b, "cross-frame", window=1, layers=[0])
    other = vl.HookedVideoLLM.from_pretrained(tiny_pllava.checkpoint_path, device="cpu")
    with pytest.raises(ValueError, match="another model"):
        vl.knockout.sweep(other, b, "cross-frame", window=1, layers=[0], clean=clean_b)


def test_lens_cli_on_a_non_finite_model_records_non_finite(world, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    d = tmp_path / "nan"
    shutil.copytree(world["model"], d)
    sd = load_file(str(d / "model.safetensors"))
    k = next(k for k in sd if k.endswith("layers.0.input_layernorm.weight"))
    sd[k] = torch.full_like(sd[k], float("nan"))
    save_file(sd, str(d / "model.safetensors"))
    data = write_data(tmp_path / "d.json", [GOOD])
    rc, _, err = run_cli(["lens", "--model", str(d), "--data", str(data), "--video-root", str(world["root"]),
                          "--positions", "video", "--out", str(tmp_path / "out"), "--no-figures", "--no-progress"])
    assert rc == 1 and "non_finite" in err  # every sample failed: exit 1, as the command documents
    statuses = {}
    for f in (tmp_path / "out").glob("*.jsonl"):
        statuses.update(read_statuses(f))
    assert statuses == {"d_0": "non_finite"}


def test_text_runs_start_with_bos_as_the_tokenizer_adds_it(tiny_pllava, two):
    """A Llama-family tokenizer adds <s>: model(text) and to_tokens(text) start with it, as every video prompt does."""
    import torch

    tok = tiny_pllava.tokenizer
    assert two[0].tokens[0, 0] == tok.bos_token_id
    tokens = tiny_pllava.to_tokens("What moves ?")
    assert tokens[0, 0] == tok.bos_token_id and tokens.shape[1] == 4
    with_bos = torch.tensor([tok("What moves ?")["input_ids"]])
    assert torch.allclose(tiny_pllava("What moves ?"), tiny_pllava(with_bos), atol=1e-5)


def test_a_tokenizer_without_bos_gets_none_prepended():
    from pathlib import Path

    from transformers import PreTrainedTokenizerFast

    from videolens.prompting.tokenizers import adds_bos

    qwen = Path(__file__).resolve().parents[2] / "shared" / "tokenizers" / "qwen3"
    if not qwen.exists():
        pytest.skip("../shared/tokenizers is absent")
    assert not adds_bos(PreTrainedTokenizerFast.from_pretrained(str(qwen)))
    assert adds_bos(PreTrainedTokenizerFast.from_pretrained(str(qwen.parent / "llama")))


# ---- DLA conventions (item 9) ------------------------------------------------------------------------
def test_dla_on_an_unfolded_model_warns_and_a_folded_one_does_not(tiny_pllava_dir, two):
    import warnings

    import videolens as vl
    from videolens.hooked.conventions import UnfoldedNormWarning

    plain = vl.HookedVideoLLM.from_pretrained_no_processing(tiny_pllava_dir, device="cpu")
    folded = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", fold_ln=True)
    a, b = (two[0].option_token_ids[L] for L in "AB")
    _, cache = plain.run_with_cache(two[0])
    with pytest.warns(UnfoldedNormWarning, match="fold_ln=True"):
        cache.logit_attrs(cache.decompose_resid(apply_ln=True), tokens=a, incorrect_tokens=b)
    _, cache = folded.run_with_cache(two[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnfoldedNormWarning)
        cache.logit_attrs(cache.decompose_resid(apply_ln=True), tokens=a, incorrect_tokens=b)


def test_refactor_factored_attn_matrices_is_refused_in_one_line(tiny_pllava_dir):
    import videolens as vl

    with pytest.raises(ValueError, match="not defined for rotary attention"):
        vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", refactor_factored_attn_matrices=True)


def test_answer_json_prints_only_the_json_on_stdout(world):
    rc, out, err = run_cli(["answer", "--model", str(world["model"]), "--video", str(world["root"] / "clip.mp4"),
                            "--question", "What moves?", "--candidates", "left", "right", "--json"])
    assert rc == 0, err
    assert set(json.loads(out)) >= {"probs", "answer"}  # the whole of stdout is one JSON object


# ---- intervals within the metric's range (item 13) ---------------------------------------------------
def test_summary_intervals_respect_the_range_of_a_relative_change():
    from videolens.knockout.summary import summarize

    recs = [{"target": "t", "pair": "p", "layer": 0, "rel_change": v, "rel_change_true": v, "true_letter": "A",
             "ko_letter": "A", "base_letter": "A", "layers": [0], "n_blocked": 1} for v in (-100.0, -100.0, 50.0)]
    row = summarize(recs)[0]
    assert row["ci95_low"] >= -100.0 and row["ci95_low_true"] >= -100.0
    assert row["ci95_low"] <= row["mean_rel_change"] <= row["ci95_high"]


def test_probability_intervals_stay_within_zero_and_one():
    import numpy as np

    from videolens.stats import PROBABILITY, mean_ci

    p = np.array([[0.0, 1.0], [0.0, 0.9], [1.0, 0.95]])
    mean, lo, hi = mean_ci(p, bounds=PROBABILITY)
    assert (lo >= 0).all() and (hi <= 1).all() and (lo <= mean).all() and (mean <= hi).all()
    assert mean_ci(p, bounds=PROBABILITY)[1].tolist() == lo.tolist()  # seeded: the same numbers every run


# ---- TransformerLens conventions ----------------------------------------------------------------------
def test_a_model_and_its_cache_pickle_with_torch_save(tiny_pllava_dir, two):
    import io

    import torch

    import videolens as vl
    from videolens import attention

    m = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu")
    x = m.prepare(two[0].sample)  # the vision tower has run: transformers has put its hooks on it
    logits, cache = m.run_with_cache(x)
    buf = io.BytesIO()
    torch.save((m, cache), buf)
    buf.seek(0)
    m2, cache2 = torch.load(buf, weights_only=False)
    assert torch.allclose(m2(x), logits, atol=1e-5) and torch.equal(cache2["blocks.0.hook_resid_post"],
                                                                   cache["blocks.0.hook_resid_post"])
    assert torch.allclose(m(m.prepare(two[0].sample)), logits, atol=1e-5)  # the live model still works
    name = type(m.blocks[0].attn).__name__
    assert getattr(attention, name) is type(m.blocks[0].attn)  # what a fresh process resolves when it loads


def test_generate_follows_transformerlens_return_types_and_cache_switch(tiny_pllava, two):
    import torch

    from videolens.prompting.inputs import stack_inputs

    x = two[0]
    text = tiny_pllava.generate(x, max_new_tokens=4, stop_at_eos=False)
    tokens = tiny_pllava.generate(x, max_new_tokens=4, stop_at_eos=False, return_type="tokens")
    assert tokens.shape == (1, x.seq_len + 4) and torch.equal(tokens[:, :x.seq_len], x.tokens)
    assert tiny_pllava.tokenizer.decode(tokens[0, x.seq_len:]) == text
    no_cache = tiny_pllava.generate(x, max_new_tokens=4, stop_at_eos=False, return_type="tokens", use_past_kv_cache=False)
    assert torch.equal(no_cache, tokens)
    batch = stack_inputs([two[2], x])
    assert tiny_pllava.generate(batch, max_new_tokens=4, stop_at_eos=False) == [
        tiny_pllava.generate(two[2], max_new_tokens=4, stop_at_eos=False), text]


def test_tl_helpers_take_a_video_input(tiny_pllava, two, capsys):
    import torch

    import videolens as vl
    from videolens.prompting.inputs import stack_inputs

    x = two[0]
    assert torch.equal(tiny_pllava.to_tokens(x), x.tokens)
    assert tiny_pllava.to_string(x) == x.prompt_text
    assert tiny_pllava.to_string(stack_inputs([x, two[1]])) == [x.prompt_text, two[1].prompt_text]
    q = int(x.tokens[0, 5])
    assert tiny_pllava.get_token_position(q, x) == int((x.tokens[0] == q).nonzero()[0, 0])
    resid, *_ = tiny_pllava.input_to_embed(x)
    _, cache = tiny_pllava.run_with_cache(x, names_filter="hook_embed")
    assert torch.allclose(resid, cache["hook_embed"])  # the video is in the embeddings
    logits = tiny_pllava(x)[0, -1].float()
    best = max(x.option_token_ids, key=lambda L: logits[x.option_token_ids[L]])
    ranks = vl.test_prompt(x, best, tiny_pllava, top_k=3)
    expected = int((logits.argsort(descending=True) == x.option_token_ids[best]).nonzero()[0, 0])
    assert ranks[0][1] == expected and "Ranks of the answer tokens" in capsys.readouterr().out


def test_a_vision_hook_that_cannot_fire_is_warned_about_once(tiny_pllava_dir, two):
    import warnings

    import videolens as vl
    from videolens.hooked.conventions import UnreachableHookWarning

    m = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu")
    hook = [("vision.blocks.0.hook_resid_post", lambda act, hook: act)]
    with pytest.warns(UnreachableHookWarning, match="keep_pixels=True"):
        m.run_with_hooks(two[0], fwd_hooks=hook)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreachableHookWarning)
        m.run_with_hooks(two[0], fwd_hooks=hook)  # once
        m2 = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu")
        m2.run_with_cache(two[0])  # caching every hook point is not a mistake
        m2.run_with_hooks(m2.prepare(two[0].sample, keep_pixels=True), fwd_hooks=hook)  # it fires here


# ---- unclear cases: one line naming the cause ---------------------------------------------------------
@pytest.mark.parametrize("exc,expected,code", [
    (lambda out: OSError(28, "No space left on device", str(out / "records.jsonl")),
     "No space left on device (disk full); finished samples are kept in", 2),
    (lambda out: PermissionError(13, "Permission denied", str(out / "records.jsonl")),
     "Permission denied: check the permissions", 2),
    (lambda out: KeyboardInterrupt(), "interrupted: finished samples are kept in", 130),
], ids=["disk-full", "read-only", "ctrl-c"])
def test_environment_failures_end_in_one_line(world, tmp_path, monkeypatch, exc, expected, code):
    from videolens.commands import flow

    out = tmp_path / "out"

    def boom(args):
        raise exc(out)

    monkeypatch.setattr(flow, "run", boom)
    data = write_data(tmp_path / "d.json", [GOOD])
    rc, _, err = run_cli(flow_argv(world, data, out))
    assert rc == code and expected in err and "Traceback" not in err
    assert len([l for l in err.splitlines() if l.strip()]) == 1


def test_a_device_this_machine_lacks_is_named_in_python(tiny_pllava_dir):
    import torch

    import videolens as vl

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available on this machine"):
        vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cuda")


@pytest.mark.parametrize("call,error,expected", [
    (lambda vl, m, x: vl.knockout.sweep(m, "str", "cross-frame"), TypeError, "inputs must be a VideoLLMInput"),
    (lambda vl, m, x: m.prepare("clip.mp4"), TypeError, "prepare takes a VideoQA"),
    (lambda vl, m, x: vl.lens.logit_lens(m, x.tokens), TypeError, "logit_lens takes a VideoLLMInput"),
    (lambda vl, m, x: vl.HookedVideoLLM.from_pretrained(m.checkpoint_path, pooling_shape=(0, 1, 1)), ValueError,
     "pooling_shape must be three positive integers"),
    (lambda vl, m, x: vl.HookedVideoLLM.from_pretrained(m.checkpoint_path, num_frames=0), ValueError,
     "num_frames must be a positive integer"),
    (lambda vl, m, x: m(dataclasses.replace(x, video_embeds=x.video_embeds[..., :-1])), ValueError,
     "prepare the sample with this model"),
], ids=["sweep-str", "prepare-str", "lens-tokens", "pooling-zero", "frames-zero", "other-width"])
def test_python_api_misuse_gets_one_clear_error(tiny_pllava, two, call, error, expected):
    import videolens as vl

    with pytest.raises(error, match=expected):
        call(vl, tiny_pllava, two[0])


def test_a_tall_video_decord_cannot_copy_is_read_with_ffmpeg(tmp_path):
    import imageio.v2 as imageio
    import numpy as np

    import videolens as vl

    path = tmp_path / "tall.mp4"
    with imageio.get_writer(str(path), fps=8, codec="libx264rgb", quality=None, pixelformat="rgb24",
                            ffmpeg_params=["-crf", "0", "-preset", "ultrafast"], macro_block_size=1) as w:
        for i in range(8):
            w.append_data(np.full((2000, 16, 3), i * 20, np.uint8))
    v = vl.load_video(path, num_frames=4)
    assert v.frames.shape == (4, 2000, 16, 3)
    assert v.frames[:, 0, 0, 0].tolist() == [20 * int(i) for i in v.indices]  # the frames asked for, in order


def test_an_input_prepared_by_other_weights_warns(tiny_pllava, two, tmp_path):
    import warnings

    import videolens as vl
    from videolens.testing import make_tiny_pllava

    other = vl.HookedVideoLLM.from_pretrained(make_tiny_pllava(tmp_path / "other", seed=7), device="cpu")
    with pytest.warns(UserWarning, match="prepared by a model with other weights"):
        other(two[0])
    same = vl.HookedVideoLLM.from_pretrained(tiny_pllava.checkpoint_path, device="cpu")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        same(two[0])  # same weights: silent
    assert not [w for w in seen if "prepared by" in str(w.message)]


@pytest.mark.parametrize("analysis", ["patch_spans", "path_patch", "edge_attribution"])
def test_patching_and_attribution_raise_on_non_finite_results(tiny_pllava, two, analysis):
    from videolens.errors import NonFiniteError
    from videolens.knockout.attribution import edge_attribution
    from videolens.patching.activation import patch_spans
    from videolens.patching.metrics import logit_diff
    from videolens.patching.path import Final, Head, path_patch

    clean, corrupted = two[0], two[1]
    metric = logit_diff(clean)
    fn = {"patch_spans": lambda: patch_spans(tiny_pllava, clean, corrupted, metric, layers=[0]),
          "path_patch": lambda: path_patch(tiny_pllava, clean, corrupted, Head(0, 0), [Final()], metric),
          "edge_attribution": lambda: edge_attribution(tiny_pllava, clean, ["cross-frame"], layers=[0])}[analysis]
    with tiny_pllava.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda a, hook: a * float("nan"))]), \
            pytest.raises(NonFiniteError, match=analysis):
        fn()
