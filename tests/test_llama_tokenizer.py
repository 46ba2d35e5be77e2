"""Prompt tokens and TokenLayout spans on the real LLaMA vocabulary (../shared/tokenizers/llama) with
``<image>`` (32000) and ``<pad>`` (32001) added as llava-hf does (REFERENCE section 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from videolens.sources.data import option_letters
from videolens.prompting.inputs import tokenize_prompt
from videolens.prompting.prompts import get_template

LLAMA = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers" / "llama"
pytestmark = pytest.mark.skipif(not (LLAMA / "tokenizer.json").exists(), reason="../shared/tokenizers is absent")

QUESTION = "Which direction does the purple sphere move in the video?"


@pytest.fixture(scope="module")
def tok():
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(str(LLAMA))
    t.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    t.add_special_tokens({"pad_token": "<pad>"})
    assert t.convert_tokens_to_ids(["<image>", "<pad>"]) == [32000, 32001]
    return t


def layout_for(tok, candidates, true_index=0):
    return tokenize_prompt(tok, get_template("eval_mvbench_vicuna"), QUESTION, candidates, 32000, (8, 12, 12),
                           true_letter=option_letters[true_index])


def test_placeholder_lone_space_and_spans(tok):
    cands = ["Up and to the right.", "Up and to the left.", "Down and to the left.", "Down and to the right."]
    tp = layout_for(tok, cands, 3)
    ids, L = tp.tokens[0].tolist(), tp.layout
    v0 = int(L.video_positions[0])
    assert ids[v0 - 1] == 29871 and ids[v0] == 32000  # the lone "▁" before <image>: in no span
    assert len(L.video_positions) == 8 * 12 * 12 and L.seq_len == len(ids)
    in_spans = set().union(*(set(range(s.start, s.stop)) for s in L.spans.values()))
    assert v0 - 1 not in in_spans
    decode = lambda g: tok.decode([ids[p] for p in L.positions(g).tolist()]).strip()  # noqa: E731
    assert decode("non_option_question") == QUESTION
    assert decode("question_header") == f"Question: {QUESTION}\nOptions:"
    for i, c in enumerate(cands):
        assert decode(f"option:{option_letters[i]}") == f"({option_letters[i]}) {c}"
    assert decode("true_option") == "(D) Down and to the right."
    assert tok.decode([ids[L.last]]) == ":("  # Llama merges ":(": the last position is that token
    # whitespace-only tokens (newlines, lone spaces) are in no span: each option span starts at "("
    for letter in "ABCD":
        assert tok.convert_ids_to_tokens(ids[L.options[letter].start]) in ("(", "▁(")


def test_all_26_option_letters_are_single_tokens(tok):
    cands = [f"Option number {i}." for i in range(26)]
    tp = layout_for(tok, cands, 25)
    assert list(tp.option_token_ids) == list(option_letters)
    # the official lookup: vocab[letter] (information_flow_analysis.py)
    assert tp.option_token_ids == {x: tok.get_vocab()[x] for x in option_letters}
    assert tp.layout.true_option == tp.layout.options["Z"]
    assert len(tp.layout.false_options) == 25
