"""The training script of the bundled tiny VideoLLM (issue 4): targets, alignment labels, and a
checkpoint that ``HookedVideoLLM.from_pretrained`` reads back as the same model."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

import videolens as vl
from videolens import synthetic as S
import tiny_lab as T
from tiny_lab.batches import _colour_words
from tiny_lab.config import _task_step, _task_weight


@pytest.fixture(scope="module")
def tok():
    return T.build_tokenizer()


def _targets(tok, item):
    return [(tok.convert_ids_to_tokens(item.tokens[p]), tok.convert_ids_to_tokens(t)) for p, t in item.targets
            if not isinstance(t, list)]


def test_inplace_answer_and_option_flags_sit_on_prompt_positions(tok):
    cfg = T.TrainConfig(inplace_answer=True, option_flags=True, echo_option=False)
    b = T.Batcher(tok, cfg)
    s = S.make_sample("color_change", 3)
    item = b.item(s, "last", aux=False)
    plain = b.item(s, "last", aux=False, train=False)
    assert item.tokens == plain.tokens  # the prompt is unchanged; only the loss reads more positions
    words = s.answer.rstrip(".").split()
    got = dict((p, t) for p, t in item.targets)
    lp = item.letter_pos
    assert [tok.convert_ids_to_tokens(got[lp - len(words) + j]) for j in range(len(words))] == words
    letter = "AB"[s.candidates.index(s.answer)]
    assert tok.convert_ids_to_tokens(got[lp]) == letter
    for L in item.layout.letters:
        end = item.layout.spans[f"option:{L}"].stop - 1
        assert tok.convert_ids_to_tokens(item.tokens[end]) == "."
        assert tok.convert_ids_to_tokens(got[end]) == ("Yes" if L == letter else "No")
    # temporal task under cross-frame knockout: only the uniform letter target
    ko = b.item(s, "knockout", aux=False)
    assert len(ko.targets) == 1 and isinstance(ko.targets[0][1], list)


def test_token_colour_ids_label_each_region(tok):
    codes, ids = _colour_words(tok)
    scene = S.make_sample("scene_transition", 0)
    frames = scene.frames()[None]
    lab = T.token_colour_ids(frames, (8, 4, 4), codes, ids).reshape(8, 16)
    for t in range(8):  # a background colour fills every region of the frame
        rgb = tuple(int(v) for v in frames[0, t, 0, 0])
        name = next(n for n, c in S.BACKGROUNDS.items() if c == rgb)
        assert (lab[t] == tok.convert_tokens_to_ids(name)).all()
    obj = S.make_sample("object_color", 0)
    f = obj.frames()[None]
    lab = T.token_colour_ids(f, (8, 4, 4), codes, ids).reshape(8, 4, 4)
    colour = tok.convert_tokens_to_ids(obj.answer.rstrip(".").lower())
    mask = f[0, 0].any(-1).reshape(4, 8, 4, 8).any(axis=(1, 3))  # regions with any sprite pixel
    assert (lab[0][mask] == colour).all() and (lab[0][~mask] == -1).all()


def test_alignment_targets_carry_the_region_position_of_a_moving_object(tok):
    """With ``align_position`` the target of the object's region is its colour embedding plus the
    code of that region; the code recovers the object's row and column in every frame, and black
    regions keep the padding embedding."""
    cfg = T.TrainConfig(align_position=0.5)
    b = T.Batcher(tok, cfg)
    E = torch.randn(len(tok), cfg.d_model)
    s = S.make_sample("moving_direction", 2)
    f = s.frames()[None]
    tgt, on = T.alignment_targets(E, b, f)
    tgt, on = tgt.reshape(8, 16, -1), on.reshape(8, 16)
    colour = tok.convert_tokens_to_ids(s.question.split()[4])
    codes = b.position_codes  # [16, d]
    for t in range(8):
        cell = int(np.flatnonzero(f[0, t].any(-1).reshape(4, 8, 4, 8).any(axis=(1, 3)).ravel())[0])
        assert on[t].tolist() == [k == cell for k in range(16)]
        rest = tgt[t, cell] - E[colour]
        assert int((codes @ rest).argmax()) == cell  # the nearest region code is the object's region
        assert torch.equal(tgt[t, ~on[t]], E[int(tok.pad_token_id)].expand(15, -1))
    no_code = T.alignment_targets(E, T.Batcher(tok, T.TrainConfig()), f)[0]
    assert torch.equal(no_code.reshape(8, 16, -1)[on], E[colour].expand(8, -1))


def test_video_targets_sit_on_the_moving_object_after_the_first_frame(tok):
    cfg = T.TrainConfig(video_targets=True)
    b = T.Batcher(tok, cfg)
    s = S.make_sample("moving_direction", 6)
    f = s.frames()
    item = b.item(s, "last", aux=False)
    assert not [t for _, t in item.targets if isinstance(t, list)]  # kept apart from the text targets
    soft = list(item.video_targets)
    words = {tuple(tok.convert_ids_to_tokens(t)) for _, t in soft}
    assert words == {(s.answer.split()[0], s.answer.rstrip(".").split()[-1])}
    v0 = int(item.layout.video_positions[0])
    cells = [divmod(p - v0, 16) for p, _ in soft]  # (frame, region)
    assert [t for t, _ in cells] == list(range(1, 8))
    for t, k in cells:
        assert f[t].any(-1).reshape(4, 8, 4, 8).any(axis=(1, 3)).ravel()[k]
    assert not b.item(s, "knockout", aux=False).video_targets
    assert not T.Batcher(tok, T.TrainConfig()).item(s, "last", aux=False).video_targets


@pytest.mark.parametrize("layer", [0, 2])
def test_video_targets_are_read_through_the_logit_lens_after_the_chosen_block(tok, layer):
    """``batch_loss`` with ``video_targets_layer`` = L equals the text loss plus the direction loss read
    by hand at ``blocks.{L-1}.hook_resid_post`` (final norm + unembedding), counted per target."""
    cfg = T.TrainConfig(video_targets=True, video_targets_layer=layer, n_layers=3, d_model=32, d_mlp=64,
                        vision_width=16, vision_layers=1)
    b = T.Batcher(tok, cfg)
    torch.manual_seed(0)
    m = T.build_model(cfg, len(tok)).eval()
    items = [b.item(S.make_sample("moving_direction", k), "last", aux=False) for k in (1, 2)]
    tokens, vpos, frames, mask = b.collate(items)
    with torch.no_grad():
        loss = T.batch_loss(m, b, items)
        emb = m.llama.model.embed_tokens(tokens).clone()
        emb[:, vpos] = m.video_embeds(frames)
        out = m.llama.model(inputs_embeds=emb, attention_mask=mask, output_hidden_states=True)
        text = [(i, p, t) for i, it in enumerate(items) for p, t in it.targets]
        lp = m.llama.lm_head(out.last_hidden_state).log_softmax(-1)
        total = -sum(float(lp[i, p, t]) for i, p, t in text)
        mid = m.llama.model.norm(out.hidden_states[layer]) if layer else out.last_hidden_state
        lv = m.llama.lm_head(mid).log_softmax(-1)
        vt = [(i, p, ids) for i, it in enumerate(items) for p, ids in it.video_targets]
        assert vt
        total -= sum(float(lv[i, p, ids].mean()) for i, p, ids in vt)
    assert float(loss) == pytest.approx(total / (len(text) + len(vt)), rel=1e-5)


def test_a_short_run_exports_a_checkpoint_equal_to_the_training_model(tmp_path, tok):
    """Two steps of every stage, then the export read by ``HookedVideoLLM.from_pretrained`` gives
    the training model's logits (fp32 export) on the prompt of a real clip."""
    import videolens as vl

    cfg = T.TrainConfig(max_steps=2, batch_size=2, eval_every=10**9, eval_per_task=1, vision_pretrain=2,
                        freeze_vision=True, inplace_answer=True, option_flags=True, n_layers=2, vision_layers=2,
                        threads=1)
    with torch.no_grad():  # train() turns autograd on for itself: a caller's no_grad (a notebook) must not break it
        T.train(cfg, tmp_path / "run")
    st = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    model = T.build_model(cfg, len(tok))
    model.load_state_dict(st["model"])
    model.eval()
    T.export(model, tok, cfg, tmp_path / "fp32", dtype=torch.float32)
    hooked = vl.HookedVideoLLM.from_pretrained(tmp_path / "fp32", device="cpu", dtype=torch.float32)
    s = S.make_sample("appearance_order", 5)
    inputs = hooked.prepare(s.to_videoqa(), num_frames=S.NUM_STEPS)
    b = T.Batcher(tok, replace(cfg))
    tokens, vpos, frames, mask = b.collate([b.item(s, "full", aux=False, train=False)])
    with torch.no_grad():
        ref = model.llama.lm_head(model.hidden(tokens, vpos, frames, mask))[0]
        got = hooked(inputs)[0]
    assert torch.equal(tokens[0], inputs.tokens[0])
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_task_start_rejects_an_unknown_task(capsys):
    assert _task_step("color_change:600") == ("color_change", 600)
    for bad in ("movin:3", "color_change", "color_change:x"):
        with pytest.raises(SystemExit):
            T.main(["--out", "unused", "--task-start", bad])
        assert "expected TASK:STEP" in capsys.readouterr().err


def test_task_weights_reject_a_bad_value(capsys):
    assert _task_weight("moving_direction:5") == ("moving_direction", 5.0)
    for bad in ("movin:3", "color_change", "color_change:x", "color_change:-1"):
        with pytest.raises(SystemExit):
            T.main(["--out", "unused", "--task-weights", bad])
        assert "expected TASK:W" in capsys.readouterr().err


def test_a_weight_for_a_task_left_out_by_tasks_and_a_layer_past_the_model_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        T.main(["--out", str(tmp_path / "a"), "--tasks", "object_color", "--task-weights", "moving_direction:4"])
    assert "moving_direction not among --tasks object_color" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        T.main(["--out", str(tmp_path / "b"), "--video-targets-layer", "7"])
    assert "--video-targets-layer: expected a block count in 0..6, got 7" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_no_knockout_tasks_run_their_knockout_draws_in_last_mode():
    cfg = T.TrainConfig(mode_probs=(0.2, 0.2, 0.6), knockout_from=0, no_knockout=("moving_direction",))
    draw = lambda task, aux=False: [T.sample_mode(cfg, np.random.default_rng(k), 10, task, aux) for k in range(200)]
    plain, kept = draw("scene_transition"), draw("moving_direction")
    assert plain.count("knockout") > 80
    assert [m if m != "knockout" else "last" for m in plain] == kept  # same draws, knockout -> last
    assert "knockout" not in draw("scene_transition", aux=True)
    assert set(T.sample_mode(replace(cfg, full_until=50), np.random.default_rng(0), 10, "color_change", False)
               for _ in range(5)) == {"full"}


def test_every_recipe_phase_parses_and_the_last_is_the_bundled_checkpoints_config(tmp_path):
    """The recipe file is run by ``--recipe``: each phase must parse, and the last phase's config must be
    the one the committed checkpoint was trained with (its model card; paths and wall-clock budget aside)."""
    import json

    cfgs = [cfg for _, cfg in T.recipe_configs(T.RECIPE_FILE, tmp_path)]
    assert len(cfgs) == 11 and cfgs[1].init_from == str(tmp_path / "p1_curriculum" / "state.pt")
    last = cfgs[-1]
    assert (last.letter_weight, last.no_knockout, last.video_targets_layer) == (5.0, ("moving_direction",), 3)
    card = Path(vl.__file__).parent / "assets" / "tiny-videollm" / "model_card.json"
    if not card.exists():
        pytest.skip("bundled model not built yet")
    trained = json.loads(card.read_text())["training"]["config"]
    want = json.loads(json.dumps(asdict(last)))
    for key in ("init_from", "minutes", "threads", "stop_at"):  # the run went on; the export is from stop_at
        trained.pop(key), want.pop(key)
    assert trained == want
    assert json.loads((card.parent / "config.json").read_text())["train_step"] == last.stop_at
