"""Prompt templates (data) and the prompt builder that records character spans as it writes.

The paper's evaluation prompt (PLLaVA ``eval_mvbench``, as the official code builds it) for Vicuna models::

    {SYSTEM} USER: <image>\\n USER: Question: {question}\\nOptions:\\n(A) {c0}\\n(B) {c1} \\nOnly give
    the best option. ASSISTANT:Best option:(

A template is plain data: the text around the video block and the question block. The builder
writes the prompt piece by piece and records the character span of every named piece, so token
spans come from the tokenizer's offset mapping and are never searched for afterwards.

Method notes (the paper's section, the official code's lines): docs/methods.md#prompt-and-frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..sources.data import option_letters
from ..registry import Registry

__all__ = ["PromptTemplate", "BuiltPrompt", "TEMPLATES", "SYSTEM_MVBENCH", "build_prompt", "get_template"]

SYSTEM_VCG = (
    "You are Video-ChatGPT, a large vision-language assistant. You are able to understand the video content that "
    "the user provides, and assist the user with a variety of tasks using natural language.Follow the instructions "
    "carefully and explain your answers in detail based on the provided video."
)
"""The official VCGBench conversation's system prompt (map-the-flow ``tasks/eval/eval_utils.py``
``conv_eval_vcg``; its sentences are joined without a space, as there)."""

SYSTEM_MVBENCH = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
    "movement of objects, and the action and pose of persons. Based on your observations, select the best "
    "option that accurately addresses the question.\n"
)


@dataclass(frozen=True)
class PromptTemplate:
    """A multiple-choice VideoQA prompt as data.

    The prompt is ``system + before_video + VIDEO + after_video + QUESTION_BLOCK + after_question
    + answer_prefix``. VIDEO is one placeholder token replaced by every video token (``frame_format``
    None), or one ``frame_format`` piece per frame joined by ``frame_separator`` where
    ``{placeholder}`` is replaced by that frame's tokens, ``{time}`` is the frame's timestamp (s) and
    ``{index}`` its number from 1.
    QUESTION_BLOCK is ``"Question: {question}\\nOptions:\\n(A) c0\\n(B) c1..."``.

    ``video_group`` says what the token groups ``video`` and ``frame:i`` hold: ``"tokens"`` the
    video tokens only (the PLLaVA / InternVL analyses), ``"block"`` the whole video block with its
    per-frame text, frame i >= 1 starting at the separator before it (the official VideoLLaMA3
    analysis: the video span between the first two newlines, frames split at the commas).

    ``eval_mvbench_open`` is the official open-ended variant of the MVBench conversation (TVBench and
    Video-MME open-ended: ``Question: {q}\n`` and no post-query or answer prompt).

    ``eval_vcgbench`` is the official open-ended VCGBench conversation (Vicuna roles, the Video-ChatGPT
    system prompt, the raw question, no post-query, no answer prompt).

    ``llava_onevision`` is LLaVA-OneVision's Qwen chat template with its multiple-choice instruction
    (lmms-eval's ``Answer with the option's letter from the given choices directly.``);
    ``llava_onevision_mvbench`` the paper's convention (MVBench system prompt, ``Only give the best
    option.``, answer prefix ``Best option:(``) in that chat template.

    ``qwen2_5_vl`` is Qwen2.5-VL's chat template (the video between ``<|vision_start|>`` and
    ``<|vision_end|>``) with the same multiple-choice instruction; ``qwen2_5_vl_mvbench`` the paper's
    convention in it.

    ``qwen3_vl`` is Qwen3-VL's chat template (no system turn; its processor writes each temporal
    slot as ``<t seconds><|vision_start|>...<|vision_end|>``, t to one decimal) with the
    multiple-choice instruction; ``qwen3_vl_mvbench`` the paper's convention in it.

    ``internvl`` is InternVL's chat format in transformers (no system turn; its processor writes each
    frame as ``Frame{i}: <img>...</img>``) with the multiple-choice instruction; ``internvl_mvbench``
    the paper's convention in it.

    ``videollama3`` is VideoLLaMA3's chat template (official videollama3/model/processor.py) with the
    official TVBench instruction (videollama3/evaluation/benchmarks/tvbench.py): no system prompt,
    ``Time t.ts:`` before each frame's tokens, frames joined by ``,``, and no answer prefix.
    """

    name: str
    system: str
    before_video: str
    after_video: str
    after_question: str
    answer_prefix: str = "Best option:("
    frame_format: Optional[str] = None
    frame_separator: str = ""
    question_prefix: str = "Question: "
    options_header: str = "\nOptions:\n"
    video_group: str = "tokens"


CHAT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
"""The default system turn of the Qwen-based chat templates (LLaVA-OneVision, Qwen2.5-VL)."""

MC_INSTRUCTION = "\nAnswer with the option's letter from the given choices directly."
"""The multiple-choice instruction of the families' own chat templates (lmms-eval's)."""


def _chatml_pair(name: str, system: str, before_video: str, after_video: str, frame_format: Optional[str] = None,
                 video_group: str = "tokens") -> Tuple[PromptTemplate, PromptTemplate]:
    """A ChatML family's two templates: ``name``, its own chat format (``system`` turn,
    ``MC_INSTRUCTION``, no answer prefix), and ``name_mvbench``, the paper's convention in the same
    chat format (the MVBench system prompt, ``Only give the best option.``, ``Best option:(``)."""
    end = "<|im_end|>\n<|im_start|>assistant\n"
    video = dict(before_video=before_video, after_video=after_video, frame_format=frame_format, video_group=video_group)
    return (PromptTemplate(name=name, system=system, after_question=MC_INSTRUCTION + end, answer_prefix="", **video),
            PromptTemplate(name=f"{name}_mvbench", system="<|im_start|>system\n" + SYSTEM_MVBENCH + "<|im_end|>\n",
                           after_question=" \nOnly give the best option." + end, **video))


TEMPLATES: Registry[PromptTemplate] = Registry("prompt template", {
    t.name: t
    for t in [
        PromptTemplate(
            name="eval_mvbench_vicuna",
            system=SYSTEM_MVBENCH,
            before_video=" USER: ",
            after_video="\n USER: ",
            after_question=" \nOnly give the best option. ASSISTANT:",
        ),
        PromptTemplate(
            name="eval_mvbench_phi3",
            system=SYSTEM_MVBENCH,
            before_video=" <|user|>\n<img>",
            after_video="</img>\n <|user|>\n",
            after_question=" \nOnly give the best option. <|assistant|>\n",
        ),
        PromptTemplate(
            name="eval_mvbench_open",
            system=SYSTEM_MVBENCH,
            before_video=" USER: ",
            after_video="\n USER: ",
            after_question="\n ASSISTANT:",
            answer_prefix="",
        ),
        PromptTemplate(
            name="eval_vcgbench",
            system=SYSTEM_VCG,
            before_video=" USER: ",
            after_video="\n USER: ",
            after_question=" ASSISTANT:",
            answer_prefix="",
            question_prefix="",
        ),
        *_chatml_pair("llava_onevision", CHAT_SYSTEM, "<|im_start|>user\n", "\n"),
        *_chatml_pair("qwen2_5_vl", CHAT_SYSTEM, "<|im_start|>user\n<|vision_start|>", "<|vision_end|>"),
        *_chatml_pair("qwen3_vl", "", "<|im_start|>user\n", "", video_group="block",
                      frame_format="<{time:.1f} seconds><|vision_start|>{placeholder}<|vision_end|>"),
        *_chatml_pair("internvl", "", "<|im_start|>user\n", "", video_group="block",
                      frame_format="Frame{index}: <img>{placeholder}</img>\n"),
        PromptTemplate(
            name="videollama3",
            system="",
            before_video="<|im_start|>user\n",
            after_video="\n",
            after_question=(
                "\nAnswer with the option's letter from the given choices directly and only give the best"
                " option.<|im_end|>\n<|im_start|>assistant\n"
            ),
            answer_prefix="",
            frame_format="Time {time:.1f}s:{placeholder}",
            frame_separator=",",
            video_group="block",
        ),
    ]
})


def get_template(name: str) -> PromptTemplate:
    """Look a template up by name; raises KeyError listing the known ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown prompt template {name!r}; known: {sorted(TEMPLATES)}") from None


@dataclass(frozen=True)
class BuiltPrompt:
    """A prompt string and the character spans ``[start, stop)`` of its named pieces.

    Span names: ``system``, ``video`` (the whole video block), ``frame:i`` (one per frame when the
    template has per-frame pieces; ``frame_block:i`` is the same with the separator before it), ``placeholder:i`` (the placeholder text of frame i, or
    ``placeholder:0`` for a single video placeholder), ``question`` (question and options),
    ``question_text`` and ``non_option_question`` (the question alone, as the official code's
    ``question_without_options``), ``question_header`` (``Question: ... Options:``, the question
    block minus the option lines: videolens' earlier non-option group, kept as a named option),
    ``option:X`` (the line ``(X) text``), ``answer_prefix``.
    """

    text: str
    spans: Dict[str, Tuple[int, int]]
    letters: List[str]


class _Writer:
    def __init__(self) -> None:
        self.parts: List[str] = []
        self.n = 0
        self.spans: Dict[str, Tuple[int, int]] = {}

    def write(self, text: str, name: Optional[str] = None) -> Tuple[int, int]:
        start = self.n
        self.parts.append(text)
        self.n += len(text)
        if name is not None:
            self.spans[name] = (start, self.n)
        return start, self.n

    def mark(self, name: str, start: int) -> None:
        self.spans[name] = (start, self.n)


def build_prompt(
    template: PromptTemplate,
    question: str,
    candidates: Sequence[str],
    placeholder: str,
    timestamps: Optional[Sequence[float]] = None,
    option_format: str = "({letter}) {text}",
    options_end: str = "",
) -> BuiltPrompt:
    """Write the prompt for one sample, recording the character span of each piece.

    Args:
        template: the prompt template.
        question: the question text.
        candidates: the options, shown as (A), (B), ... in this order.
        placeholder: the text of the video placeholder token (``"<image>"`` for PLLaVA).
        timestamps: per-frame times in seconds; required by templates with ``frame_format``.
        option_format: how an option line reads (``"({letter}) {text}"``, the paper's; Video-MME's
            options are written ``"{letter}. {text}"``, ``VideoQA.option_format``). With options not
            opened by ``(`` a template answer prefix ending in ``(`` loses it (``Best option:``, the
            official Video-MME answer prompt).
        options_end: text after the last option line (Video-MME's official block keeps its final
            newline: ``"\n"``).

    Raises:
        ValueError: a per-frame template without timestamps.
    """
    w = _Writer()
    w.write(template.system, "system")
    w.write(template.before_video)
    video_start = w.n
    if template.frame_format is None:
        w.write(placeholder, "placeholder:0")
    else:
        if timestamps is None:
            raise ValueError(f"template {template.name!r} writes per-frame timestamps: pass timestamps")
        for i, t in enumerate(timestamps):
            if i:
                w.write(template.frame_separator)
            frame_start = w.n
            head, tail = template.frame_format.split("{placeholder}")
            w.write(head.format(time=t, index=i + 1))
            w.write(placeholder, f"placeholder:{i}")
            w.write(tail.format(time=t, index=i + 1))
            w.mark(f"frame:{i}", frame_start)
            w.mark(f"frame_block:{i}", frame_start - (len(template.frame_separator) if i else 0))
    w.mark("video", video_start)
    w.write(template.after_video)
    q_start = w.n
    w.write(template.question_prefix)
    w.write(question, "question_text")
    w.mark("non_option_question", w.n - len(question))  # the paper's group: the raw question text only
    if not candidates:  # an open-ended question: no options block
        w.mark("question_header", q_start)
        w.mark("question", q_start)
        w.write(template.after_question)
        w.write(template.answer_prefix, "answer_prefix")
        return BuiltPrompt("".join(w.parts), w.spans, [])
    w.write(template.options_header.rstrip("\n"))
    w.mark("question_header", q_start)
    w.write(template.options_header[len(template.options_header.rstrip("\n")):])
    letters = [option_letters[i] for i in range(len(candidates))]
    for i, (letter, cand) in enumerate(zip(letters, candidates)):
        if i:
            w.write("\n")
        w.write(option_format.format(letter=letter, text=cand), f"option:{letter}")
    w.mark("question", q_start)
    w.write(options_end)
    w.write(template.after_question)
    prefix = template.answer_prefix
    if prefix.endswith("(") and not option_format.startswith("("):
        prefix = prefix[:-1]
    w.write(prefix, "answer_prefix")
    return BuiltPrompt("".join(w.parts), w.spans, letters)
