"""Open-ended knockout: the model's own greedy answer is traced token by token under the official
vqrl-to-qrl knockouts; the fast engine equals whole forwards; the CLI runs it on the bundled model."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from videolens.cli import main
from videolens.knockout.open_ended import OPEN_ENDED_PAIRS, extend_with_answer, open_ended_input, open_ended_sweep
from videolens.running.records import read_records

SAMPLE = dict(question="What is the bird doing?", candidates=["It flies away.", "It sleeps."], answer="It sleeps.")


@pytest.fixture(scope="module")
def inputs(tiny_pllava, clip_path):
    return open_ended_input(tiny_pllava, vl.VideoQA(video=str(clip_path), **SAMPLE), num_frames=8)


def test_traced_tokens_are_the_greedy_answer_and_fast_equals_full(tiny_pllava, inputs):
    model = tiny_pllava
    assert inputs.prompt_text.endswith("ASSISTANT:Answer:") and model.template.answer_prefix == "Best option:("
    fast = open_ended_sweep(model, inputs, window=3, track=2, max_new_tokens=4, layers=[0, 2])
    full = open_ended_sweep(model, inputs, window=3, track=2, max_new_tokens=4, layers=[0, 2], method="full")
    assert len(fast) == len(full) == 2 * 3 + 2 * 4  # no response->last for the first answer token
    for a, b in zip(fast, full):
        assert a["ko_prob"] == pytest.approx(b["ko_prob"], rel=1e-4, abs=1e-7)
    with torch.no_grad():
        t0 = int(model(inputs)[0, -1].argmax())
        t1 = int(model(extend_with_answer(inputs, [t0]))[0, -1].argmax())
        p1 = float(model(extend_with_answer(inputs, [t0]))[0, -1].softmax(-1)[t1])
    second = [r for r in fast if r["tracked"]["offset"] == 1]
    assert {r["tracked"]["token_id"] for r in second} == {t1} and second[0]["base_prob"] == pytest.approx(p1, rel=1e-5)
    assert [r["pair"] for r in second[::2]] == list(OPEN_ENDED_PAIRS)
    resp = next(r for r in second if r["pair"] == "response->last")
    assert resp["n_blocked"] == 1  # the one answer token before the tracked one, read by last
    assert any(abs(r["rel_change"]) > 1e-3 for r in fast)


def test_bad_offsets_are_refused(tiny_pllava, inputs):
    with pytest.raises(ValueError, match="outside the"):
        open_ended_sweep(tiny_pllava, inputs, offsets=[50], max_new_tokens=2, layers=[0])


def test_cli_open_ended_flow_on_the_bundled_model(tmp_path):
    from videolens.sources.synthetic import write_dataset

    files = write_dataset(tmp_path / "data", n_per_task=2, seed=5, tasks=["color_change"])
    out = tmp_path / "oe"
    assert main(["flow", "--open-ended", "--data", str(files["color_change"]), "--video-root",
                 str(tmp_path / "data" / "videos"), "--out", str(out), "--device", "cpu", "--no-progress",
                 "--max-new-tokens", "3"]) == 0
    recs = [r for r in read_records(out / "records.jsonl") if r.get("target") == "open-ended"]
    assert {r["sample_id"] for r in recs} and (out / "flow_open-ended.png").stat().st_size > 1000
    assert all(r["tracked"]["offset"] == 0 and r["answer"] for r in recs)
    header = (out / "records.jsonl").read_text().splitlines()[0]
    assert '"open_ended": true' in header


def test_open_ended_settings_are_checked_once_and_run_the_same_sweep(tiny_pllava, clip_path):
    import videolens as vl
    from videolens.knockout.open_ended import OpenEndedSettings, open_ended_input, open_ended_sweep

    x = open_ended_input(tiny_pllava, vl.VideoQA(video=str(clip_path), question="What moves?",
                                                 candidates=["left", "right"], answer="left"))
    s = OpenEndedSettings(window=1, track=2, max_new_tokens=3, layers=(0,))
    assert open_ended_sweep(tiny_pllava, x, settings=s.check(tiny_pllava)) == open_ended_sweep(
        tiny_pllava, x, window=1, track=2, max_new_tokens=3, layers=[0])
    for bad, msg in (({"window": 0}, "positive"), ({"track": 0}, "track must be a positive integer"),
                     ({"offsets": (-1,)}, "offsets must be >= 0"), ({"method": "fastest"}, "unknown knockout method")):
        with pytest.raises(ValueError, match=msg):
            OpenEndedSettings(**bad)
    with pytest.raises(ValueError, match="larger than the model"):
        OpenEndedSettings(window=99).check(tiny_pllava)
