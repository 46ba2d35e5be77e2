"""``videolens answer``: each option's probability for one video and question."""

from __future__ import annotations

import json

from .common import add_model_arguments, add_video_arguments, load_model, one_sample

NAME = "answer"
HELP = "print each option's probability and the chosen answer for one video and question"


def add_arguments(p) -> None:
    add_model_arguments(p)
    add_video_arguments(p, required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    sample = one_sample(args)  # bad question/options refused before the model loads
    model = load_model(args)
    inputs = model.prepare(sample, num_frames=args.num_frames)
    probs = model.option_probs(inputs)
    chosen = max(probs, key=probs.get)
    if args.json:
        print(json.dumps({"probs": probs, "answer": chosen, "answer_text": args.candidates[ord(chosen) - 65],
                          "correct": (chosen == sample.answer_letter) if args.answer else None}))
        return 0
    for (letter, p), cand in zip(probs.items(), args.candidates):
        mark = "  <- chosen" if letter == chosen else ""
        truth = "  (right answer)" if args.answer and letter == sample.answer_letter else ""
        print(f"({letter}) {p:10.4g}  {cand}{mark}{truth}")
    print(f"answer: ({chosen}) {args.candidates[ord(chosen) - 65]}")
    return 0
