"""The README's Python examples run as written (on a tiny model and a generated clip)."""

from pathlib import Path

import pytest

import videolens as vl

ROOT = Path(__file__).resolve().parents[1]


def _block(after: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(after, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_analyses_example_runs(tiny_pllava, clip_path):
    model = tiny_pllava
    sample = vl.VideoQA(video=str(clip_path), question="What did the person do first?",
                        candidates=["Put down the blanket.", "Took the towel."], answer="Took the towel.")
    inputs = model.prepare(sample, num_frames=8)
    code = _block("## Analyses (Python)").replace("layers=10", "layers=1").replace("window=9", "window=3").replace("range(5, 15)", "range(0, 2)")
    ns = {"model": model, "inputs": inputs}
    exec(compile(code, "README.md", "exec"), ns)
    assert len(ns["records"]) > 0 and ns["counts"] is not None and ns["view"] is not None
