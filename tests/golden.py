"""What the golden tests (``test_golden_*.py``) share: where ``../shared/golden/<family>`` and the
videos are, the skip when they are absent, the golden file, and the samples it names as prepared
inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest
import torch

import videolens as vl

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VIDEOS = SHARED / "data" / "videos"


def golden(family: str) -> Tuple[Path, Dict[str, Any], Any]:
    """``(folder, golden.json's content or {"samples": []}, the module's pytestmark)`` of a family."""
    folder = SHARED / "golden" / family
    gold_file = folder / "golden.json"
    mark = pytest.mark.skipif(not gold_file.exists() or not VIDEOS.exists(),
                              reason=f"../shared/golden/{family} or ../shared/data/videos is absent")
    gold = json.loads(gold_file.read_text()) if gold_file.exists() else {"samples": []}
    return folder, gold, mark


def video_qa(entry: Dict[str, Any], video_file: str) -> vl.VideoQA:
    """A golden sample's annotation entry as a VideoQA (its window when the entry has one)."""
    return vl.VideoQA(video=str(VIDEOS / video_file), question=entry["question"], candidates=entry["candidates"],
                      answer=entry["answer"], start=entry.get("start"), end=entry.get("end"))


def prepare_all(model, samples: Dict[Any, Dict[str, Any]], num_frames: Optional[int] = None) -> Dict[Any, Any]:
    """Each sample (``{"entry", "video_file"}``) prepared by ``model``."""
    return {i: model.prepare(video_qa(s["entry"], s["video_file"]), num_frames=num_frames) for i, s in samples.items()}


def last_logits(model, prepared: Dict[Any, Any]) -> Dict[Any, torch.Tensor]:
    """The clean last-position logits ``[d_vocab]`` of each prepared input."""
    with torch.no_grad():
        return {i: model(x)[0, -1] for i, x in prepared.items()}
