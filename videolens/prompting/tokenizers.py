"""Word-level tokenizers for tiny models (tests and the bundled model).

Built with the ``tokenizers`` library and wrapped as a ``transformers.PreTrainedTokenizerFast``, so
they save to ``tokenizer.json`` beside a checkpoint, load back with ``AutoTokenizer``, and give
offset mappings like any real fast tokenizer. Words are split on white space and every punctuation
character stands alone, so ``"Best option:("`` ends in the token ``"("`` and the next token is the
option letter.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from .prompts import TEMPLATES

__all__ = ["build_word_level_tokenizer", "adds_bos", "SPECIAL_TOKENS"]

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")


def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


def build_word_level_tokenizer(
    texts: Iterable[str],
    placeholder: str = "<image>",
    placeholder_id: int | None = None,
    vocab_size: int | None = None,
    extra_words: Sequence[str] = (),
):
    """A word-level fast tokenizer covering every word of ``texts`` and the prompt templates.

    Args:
        texts: texts whose words make the vocabulary (questions, options, answers).
        placeholder: the video placeholder token (an added special token, never split).
        placeholder_id: its id; default the next free id after the words.
        vocab_size: pad the vocabulary with ``<extra_i>`` tokens up to this size (so the
            placeholder can sit inside or outside the embedding matrix as in real checkpoints).
        extra_words: more words to include.

    Returns:
        ``transformers.PreTrainedTokenizerFast`` with BOS ``<s>`` prepended by
        ``add_special_tokens=True``.

    Raises:
        ValueError: ``placeholder_id`` collides with a word, or ``vocab_size`` is too small.
    """
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    pre = _pre_tokenizer()
    words: dict[str, None] = {}
    corpus = list(texts) + list(extra_words) + [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"] + list("()[]{}.,:;!?'\"-+*/=<>%")
    for t in TEMPLATES.values():
        corpus += [t.system, t.before_video, t.after_video, t.after_question, t.answer_prefix,
                   t.question_prefix, t.options_header, "Time 0.0s:"]
        if t.frame_format:
            corpus.append(t.frame_format.format(time=0.0, index=1, placeholder=" "))
    for text in corpus:
        for piece, _ in pre.pre_tokenize_str(text):
            words.setdefault(piece, None)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        if w not in vocab and w != placeholder:
            vocab[w] = len(vocab)
    if placeholder_id is None:
        placeholder_id = len(vocab)
    if placeholder_id in vocab.values():
        raise ValueError(f"placeholder_id {placeholder_id} is already a word's id")
    size = max(len(vocab), placeholder_id + 1) if vocab_size is None else vocab_size
    if size < len(vocab):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(vocab)} words")
    i = len(vocab)
    while len(vocab) < size - (1 if placeholder_id < size else 0):
        if i != placeholder_id:
            vocab[f"<extra_{i}>"] = i
        i += 1
    vocab[placeholder] = placeholder_id
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.add_special_tokens([placeholder])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.add_special_tokens({"additional_special_tokens": [placeholder]})
    return fast


def adds_bos(tokenizer) -> bool:
    """Whether ``tokenizer(text)`` starts with its BOS token (Llama/Vicuna: yes; Qwen: no)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return bos is not None and len(ids) > 0 and ids[0] == bos
