"""The eval_mvbench prompt, and TokenLayout spans read off the tokenizer's offsets."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from videolens.prompting.inputs import PromptTokenizationError, tokenize_prompt
from videolens.prompting.prompts import SYSTEM_MVBENCH, TEMPLATES, build_prompt
from videolens.testing import PLACEHOLDER, tiny_tokenizer

Q = "What did the person do first?"
C = ["Put down the blanket.", "Took the towel.", "It sleeps."]


def test_vicuna_prompt_exact():
    built = build_prompt(TEMPLATES["eval_mvbench_vicuna"], Q, C, "<image>")
    expected = (
        SYSTEM_MVBENCH
        + " USER: <image>\n USER: Question: What did the person do first?\nOptions:\n(A) Put down the blanket.\n"
        "(B) Took the towel.\n(C) It sleeps. \nOnly give the best option. ASSISTANT:Best option:("
    )
    assert built.text == expected
    assert SYSTEM_MVBENCH.startswith("Carefully watch the video") and SYSTEM_MVBENCH.endswith("question.\n")
    s = built.spans
    assert built.text[slice(*s["option:B"])] == "(B) Took the towel."
    assert built.text[slice(*s["question_text"])] == Q
    assert built.text[slice(*s["non_option_question"])] == Q  # the official question_without_options
    assert built.text[slice(*s["question_header"])] == f"Question: {Q}\nOptions:"  # videolens' earlier group


def test_phi3_prompt_shape():
    text = build_prompt(TEMPLATES["eval_mvbench_phi3"], Q, C[:2], "<IMG_CONTEXT>").text
    assert text.startswith(SYSTEM_MVBENCH + " <|user|>\n<img><IMG_CONTEXT></img>\n <|user|>\nQuestion: ")
    assert text.endswith("(B) Took the towel. \nOnly give the best option. <|assistant|>\nBest option:(")


def _layout(grid=(2, 3, 3), true="B", template="eval_mvbench_vicuna", timestamps=None):
    tok = tiny_tokenizer()
    return tok, tokenize_prompt(tok, TEMPLATES[template], Q, C, PLACEHOLDER, grid, true, timestamps)


def test_layout_spans_decode_to_their_text():
    tok, tp = _layout()
    L, ids = tp.layout, tp.tokens[0]
    dec = lambda span: tok.decode(ids[span.slice])
    assert L.seq_len == ids.shape[0]
    assert dec(L.question_text if hasattr(L, "question_text") else L.spans["question_text"]) == "What did the person do first ?"
    assert dec(L.options["A"]) == "( A ) Put down the blanket ."
    assert dec(L.true_option) == "( B ) Took the towel ."
    assert [dec(s) for s in L.false_options] == ["( A ) Put down the blanket .", "( C ) It sleeps ."]
    assert dec(L.spans["answer_prefix"]) == "Best option : ("
    assert L.last == L.seq_len - 1 and int(ids[L.last]) == tok.convert_tokens_to_ids("(")
    # video: 2 frames x 3 x 3 placeholders, contiguous, frame-major
    assert len(L.video) == 18 and (ids[L.video.slice] == PLACEHOLDER).all()
    assert (ids == PLACEHOLDER).sum() == 18
    assert [len(f) for f in L.frames] == [9, 9] and L.frames[1].start == L.frames[0].stop
    assert L.video_coords(L.video.start + 9 + 4) == (1, 1, 1)
    assert L.frame_of(L.video.start + 8) == 0
    # groups are disjoint where the paper's groups are
    q = set(L.positions("non_option_question").tolist())
    opts = set(L.positions("option:A").tolist()) | set(L.positions("option:B").tolist()) | set(L.positions("option:C").tolist())
    assert not q & opts and (q | opts) <= set(L.positions("question").tolist())
    assert tp.option_token_ids == {x: tok.convert_tokens_to_ids(x) for x in "ABC"}


def test_per_frame_template_records_each_frame():
    tok, tp = _layout(template="videollama3", timestamps=[0.0, 1.5])
    L = tp.layout
    assert len(L.video_positions) == 18 and len(L.frames) == 2
    # the official VideoLLaMA3 groups: the video block includes the timestamp text and the frames
    # partition it, frame 1 starting at the comma before it
    assert len(L.video) > 18 and L.frames[0].start == L.video.start and L.frames[-1].stop == L.video.stop
    assert L.frames[1].start == L.frames[0].stop and L.positions("video").tolist() == list(L.video)
    assert (tp.tokens[0, L.video_positions] == PLACEHOLDER).all()
    assert tp.prompt.text.startswith("<|im_start|>user\nTime 0.0s:<image>,Time 1.5s:<image>\nQuestion: ")


@pytest.mark.parametrize("name", ["internvl", "internvl_mvbench"])
def test_internvl_templates_write_one_numbered_block_a_frame(name):
    tok, tp = _layout(template=name, timestamps=[0.0, 1.5])
    L, text = tp.layout, tp.prompt.text
    assert "Frame1: <img><image></img>\nFrame2: <img><image></img>\nQuestion: " in text
    assert len(L.frames) == 2 and L.frames[0].start == L.video.start and L.frames[-1].stop == L.video.stop
    assert (tp.tokens[0, L.video_positions] == PLACEHOLDER).all() and len(L.video) > len(L.video_positions)
    assert text.startswith("<|im_start|>system\n" if name == "internvl_mvbench" else "<|im_start|>user\nFrame1: ")
    assert text.endswith("<|im_start|>assistant\n" if name == "internvl" else "<|im_start|>assistant\nBest option:(")


def test_multi_token_letter_raises():
    tok = tiny_tokenizer()
    tok.add_tokens(["(A"])  # now "(A" after the prompt merges into one token
    with pytest.raises(PromptTokenizationError, match="option letter"):
        tokenize_prompt(tok, TEMPLATES["eval_mvbench_vicuna"], Q, C, PLACEHOLDER, (1, 2, 2), "A")


def test_split_placeholder_raises():
    tok = tiny_tokenizer()
    with pytest.raises(PromptTokenizationError, match="placeholder"):
        tokenize_prompt(tok, TEMPLATES["eval_mvbench_vicuna"], Q, C, 395, (1, 2, 2), "A")  # "<extra_395>" splits


def test_unknown_group_lists_known():
    _, tp = _layout()
    with pytest.raises(KeyError, match="known"):
        tp.layout.positions("nonsense")
    assert tp.layout.positions("frame:-1").tolist() == list(tp.layout.frames[-1])
    assert tp.layout.positions("span:3:5").tolist() == [3, 4]
