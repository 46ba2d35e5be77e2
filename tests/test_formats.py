"""Annotation formats: TOMATO's own layout read from real entries, detection, and one error naming
the fields of every format for a file in none."""

from __future__ import annotations

import json
import shutil

import pytest

import videolens as vl
from videolens.sources.data import AnnotationError
from videolens.sources.formats import FORMATS, detect_format, load_annotation_files, load_annotations, load_tomato
from videolens.prompting.prompts import build_prompt, get_template


def test_real_tomato_entries(shared_data):
    for name, task in (("count_sample.json", "Count"), ("direction_sample.json", "Direction")):
        path = shared_data / "tomato" / name
        raw = json.loads(path.read_text())
        samples = load_tomato(path, "/tomato/videos")
        assert [s.sample_id for s in samples] == [f"{task}_{k}" for k in raw]
        for s, e in zip(samples, raw.values()):
            assert s.task == task and s.candidates == e["options"] and s.answer == e["options"][e["answer"]]
            assert s.video == f"/tomato/videos/{e['demonstration_type']}/{e['key']}.mp4"
            assert s.extra["motion_type"] == e["motion_type"]
        assert detect_format(path) == "tomato" and load_annotations(path, "/v")[0].question == samples[0].question


def test_tomato_question_block_is_the_official_template(shared_data):
    """tasks/eval/tomato/__init__.py qa_template: "Question: q\\nOptions:\\n(A) c0\\n...", trailing newline stripped."""
    e = next(iter(json.loads((shared_data / "tomato" / "count_sample.json").read_text()).values()))
    official = f"Question: {e['question']}\nOptions:\n" + "".join(
        f"({chr(65 + i)}) {c}\n" for i, c in enumerate(e["options"])).rstrip()
    built = build_prompt(get_template("eval_mvbench_vicuna"), e["question"], e["options"], "<image>")
    a, b = built.spans["question"]
    assert built.text[a:b] == official


def test_detection_and_one_error_for_an_unknown_format(shared_data, tmp_path):
    assert detect_format(shared_data / "tvbench" / "action_sequence_sample.json") == "tvbench"
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"items": [{"clip": "a.mp4", "q": "?"}], "n": 1}))
    with pytest.raises(AnnotationError) as err:
        load_annotations(odd, tmp_path)
    msg = str(err.value)
    assert "odd.json is in no known annotation format" in msg and all(n in msg for n, f in FORMATS.items() if f.detectable)
    assert "options, answer, key" in msg and "video, question, candidates, answer" in msg and "correct_choice" in msg
    with pytest.raises(AnnotationError, match="unknown annotation format 'csv'"):
        load_annotations(shared_data / "tvbench" / "action_sequence_sample.json", tmp_path, "csv")


@pytest.mark.parametrize("change,message", [
    (lambda e: e.update(answer=9), "'answer' must be an index into 'options'"),
    (lambda e: e.pop("key"), "missing field(s) ['key']"),
    (lambda e: e.update(options=["1", "1", "2"], answer=0), "duplicate candidates"),
])
def test_bad_tomato_entries_name_the_entry(shared_data, tmp_path, change, message):
    raw = json.loads((shared_data / "tomato" / "count_sample.json").read_text())
    first = next(iter(raw))
    change(raw[first])
    (tmp_path / "count.json").write_text(json.dumps(raw))
    with pytest.raises(AnnotationError) as err:
        load_tomato(tmp_path / "count.json", tmp_path)
    assert f"entry '{first}'" in str(err.value) and message in str(err.value)


def test_flow_reads_a_tomato_file(shared_data, tmp_path, clip_path):
    from test_bad_inputs import run_cli
    from videolens.testing import make_tiny_pllava

    raw = json.loads((shared_data / "tomato" / "direction_sample.json").read_text())
    for e in raw.values():
        (tmp_path / "videos" / e["demonstration_type"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip_path, tmp_path / "videos" / e["demonstration_type"] / f"{e['key']}.mp4")
    data = tmp_path / "direction.json"
    data.write_text(json.dumps(raw))
    ck = make_tiny_pllava(tmp_path / "m", n_layers=2, pooling_shape=(2, 2, 2), extra_config={"num_frames": 2},
                          d_model=32, n_heads=2, vision_layers=1, d_vision=16, image_size=16)
    rc, _, err = run_cli(["flow", "--model", str(ck), "--data", str(data), "--video-root", str(tmp_path / "videos"),
                          "--target", "cross-frame", "--samples", "all", "--out", str(tmp_path / "out"),
                          "--no-figures", "--no-progress"])
    assert rc == 0, err
    statuses = vl.runs.read_statuses(tmp_path / "out" / "records.jsonl")
    assert statuses == {f"Direction_{k}": "ok" for k in raw}
    assert len(load_annotation_files([data], tmp_path / "videos")) == len(raw)


LVB_ENTRY = {  # the fields the official LongVideoBench loader reads (tasks/eval/longvideobench/__init__.py)
    "id": "86CxyhFV9MI_0", "video_path": "cockatoo.mp4", "question": "What does the bird do?",
    "candidates": ["It flies away.", "It walks toward the camera.", "It sleeps."], "correct_choice": 1,
    "duration": 14.0, "question_category": "S2E", "subtitle_path": "86CxyhFV9MI_en.json",
    "starting_timestamp_for_subtitles": 0}


def test_longvideobench_entries_and_its_own_frame_sampling(shared_data, tmp_path):
    path = tmp_path / "lvb_val.json"
    path.write_text(json.dumps([LVB_ENTRY, dict(LVB_ENTRY, id="x_1", duration=3.0, correct_choice=0)]))
    assert detect_format(path) == "longvideobench"
    samples = load_annotations(path, shared_data / "videos")
    s = samples[0]
    assert (s.sample_id, s.task, s.answer, s.sampler) == ("86CxyhFV9MI_0", "S2E", "It walks toward the camera.",
                                                          "longvideobench")
    assert s.video == str(shared_data / "videos" / "cockatoo.mp4")
    import decord

    fps = decord.VideoReader(s.video).get_avg_fps()
    for smp in samples:  # the official load_video's formula, transcribed
        d = smp.extra["duration"]
        n = min(8, int(d))
        official = [int(int(d * fps) / n) * i for i in range(n)]
        official += [official[-1]] * (8 - n)
        assert smp.load(8).indices.tolist() == official
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([dict(LVB_ENTRY, correct_choice=7)]))
    with pytest.raises(AnnotationError, match="entry 0: 'correct_choice' must be an index"):
        load_annotations(bad, tmp_path)


VIDEOMME_ROWS = [  # the official loader's fields (videomme/test-00000-of-00001.parquet)
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
     "task_type": "Counting Problem", "question": "When demonstrating the Germany modern Christmas tree is "
     "initially decorated with apples, candles and berries, which kind of the decoration has the largest number?",
     "options": ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three kinds are of the same number."],
     "answer": "C"},
    {"video_id": "002", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=sdfEW3bQyOY", "videoID": "sdfEW3bQyOY", "question_id": "002-1",
     "task_type": "Object Recognition", "question": "What is shown first?",
     "options": ["A. A tree.", "B. A car.", "C. A dog.", "D. A boat."], "answer": "A"},
]


@pytest.mark.parametrize("suffix", [".parquet", ".json"])
def test_videomme_rows_prompt_and_layout(tmp_path, suffix, clip_path, tiny_pllava):
    import pandas as pd

    path = tmp_path / f"videomme{suffix}"
    if suffix == ".parquet":
        pd.DataFrame(VIDEOMME_ROWS).to_parquet(path)
    else:
        path.write_text(json.dumps(VIDEOMME_ROWS))
    shutil.copy(clip_path, tmp_path / "fFjv93ACGo8.mkv")  # the first existing extension is taken
    assert detect_format(path) == "videomme"
    s, t = load_annotations(path, tmp_path)
    assert s.video == str(tmp_path / "fFjv93ACGo8.mkv") and t.video == str(tmp_path / "sdfEW3bQyOY.mp4")
    assert s.candidates[2] == "Berries." and s.answer == "Berries." and s.answer_letter == "C"
    assert (s.sample_id, s.task, s.extra["duration"]) == ("001-1", "Counting Problem", "short")
    x = tiny_pllava.prepare(s, num_frames=8)
    assert x.prompt_text.endswith("\nOptions:\nA. Apples.\nB. Candles.\nC. Berries.\nD. The three kinds are of the same "
                                  "number.\n \nOnly give the best option. ASSISTANT:Best option:")  # the official prompt
    assert tiny_pllava.tokenizer.decode(x.tokens[0, x.layout.true_option.slice]).replace(" ", "").startswith("C.")
    assert x.layout.true_option == x.layout.options["C"] and x.option_token_ids["C"] != x.option_token_ids["A"]


@pytest.mark.parametrize("change,message", [
    ({"options": ["Apples.", "B. Candles."]}, "option 0 must start with 'A. '"),
    ({"answer": "E"}, "'answer' must be one of the option letters"),
    ({"url": None, "videoID": None}, "needs 'url'"),
    ({"question": None}, "question"),
])
def test_bad_videomme_rows_name_the_row(tmp_path, change, message):
    rows = [dict(VIDEOMME_ROWS[0]), dict(VIDEOMME_ROWS[1], **change)]
    path = tmp_path / "videomme.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(AnnotationError, match=message) as err:
        load_annotations(path, tmp_path, format="videomme")
    assert "row 1" in str(err.value)


VCG_ROWS = [  # Benchmarking_QA/generic_qa.json's fields (official tasks/eval/vcgbench)
    {"Q": "What is the man doing in the video?", "A": "The man is fixing a bicycle wheel.", "video_name": "v_abc"},
    {"Q": "What happens after the dog jumps?", "A": "It lands in the water.", "video_name": "v_def"},
]


def test_vcgbench_open_ended_samples_and_the_official_prompt(tmp_path, clip_path, tiny_pllava_dir):
    from videolens.cli import main
    from videolens.prompting.prompts import SYSTEM_VCG
    from videolens.running.records import read_records

    path = tmp_path / "generic_qa.json"
    path.write_text(json.dumps(VCG_ROWS))
    shutil.copy(clip_path, tmp_path / "v_abc.mkv")
    assert detect_format(path) == "vcgbench"
    a, b = load_annotations(path, tmp_path)
    assert a.open_ended and a.candidates == [] and a.answer_letter is None and a.task == "generic_qa"
    assert a.video == str(tmp_path / "v_abc.mkv") and a.sample_id == "generic_qa_0"
    built = build_prompt(get_template("eval_vcgbench"), a.question, [], "<image>")
    assert built.text == f"{SYSTEM_VCG} USER: <image>\n USER: {a.question} ASSISTANT:"  # conv_eval_vcg.get_prompt()
    base = ["flow", "--model", str(tiny_pllava_dir), "--data", str(path), "--video-root", str(tmp_path), "--device",
            "cpu", "--no-progress", "--template", "eval_vcgbench"]
    assert main(base + ["--out", str(tmp_path / "mc"), "--target", "cross-frame"]) == 2  # no options: refused
    assert main(base + ["--out", str(tmp_path / "oe"), "--open-ended", "--answer-prefix", "", "--max-new-tokens",
                        "2", "--window", "3"]) == 0
    recs = read_records(tmp_path / "oe" / "records.jsonl")
    assert {r["sample_id"] for r in recs if r.get("target") == "open-ended"} == {"generic_qa_0"}
    assert any(r.get("status", "") == "missing_video" for r in [json.loads(l) for l in
               (tmp_path / "oe" / "records.jsonl").read_text().splitlines()] if r.get("_done"))


def test_bad_vcgbench_entries_name_the_entry(tmp_path):
    path = tmp_path / "temporal_qa.json"
    path.write_text(json.dumps([VCG_ROWS[0], {"Q": "Why?", "video_name": "v"}]))
    with pytest.raises(AnnotationError, match="entry 1"):
        load_annotations(path, tmp_path, format="vcgbench")


def test_tomato_flow_and_pathways_on_the_bundled_model(shared_data, tmp_path):
    """TOMATO's real entries pointed at clips the synthetic generator draws (one per entry), run end to
    end by flow and pathways on the bundled model."""
    from test_bad_inputs import run_cli
    from videolens.sources.scenes import write_clip
    from videolens.sources.synthetic import make_samples

    raw = json.loads((shared_data / "tomato" / "direction_sample.json").read_text())
    for e, s in zip(raw.values(), make_samples("moving_direction", len(raw), seed=11)):
        folder = tmp_path / "videos" / e["demonstration_type"]
        folder.mkdir(parents=True, exist_ok=True)
        write_clip(folder / f"{e['key']}.mp4", s.scene)
    data = tmp_path / "direction.json"
    data.write_text(json.dumps(raw))
    common = ["--data", str(data), "--video-root", str(tmp_path / "videos"), "--no-figures", "--no-progress",
              "--device", "cpu"]
    rc, _, err = run_cli(["flow", "--target", "cross-frame", "--samples", "all", "--out", str(tmp_path / "f"), *common])
    assert rc == 0, err
    rc, _, err = run_cli(["pathways", "--spec", "llava-next-7b-video-ft", "--out", str(tmp_path / "p"), *common])
    assert rc == 0, err
    for out in ("f", "p"):
        assert vl.runs.read_statuses(tmp_path / out / "records.jsonl") == {f"Direction_{k}": "ok" for k in raw}


def test_videomme_open_ended_variant(tmp_path):
    path = tmp_path / "videomme.json"
    path.write_text(json.dumps(VIDEOMME_ROWS))
    s = load_annotations(path, tmp_path, format="videomme_open")[0]
    assert s.open_ended and s.candidates == [] and s.answer == "Berries."
    built = build_prompt(get_template("eval_mvbench_open"), s.question, [], "<image>")
    assert built.text.endswith(f" USER: <image>\n USER: Question: {s.question}\n ASSISTANT:")  # official open variant
