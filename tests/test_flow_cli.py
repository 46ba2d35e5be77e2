"""``videolens flow``: records, figures, summary, resuming, skipped samples and argument errors."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from videolens.cli import main
from videolens.knockout import TARGETS
from videolens.running.records import read_records

QUESTIONS = [
    ("What did the person do first?", ["Put down the blanket.", "Took the towel."]),
    ("What is the bird doing?", ["It flies away.", "It sleeps.", "It walks toward the camera."]),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from videolens.testing import make_tiny_pllava

    return make_tiny_pllava(tmp_path_factory.mktemp("ckpt_flow") / "pllava6", n_layers=6)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip_path):
    root = tmp_path_factory.mktemp("flowdata")
    shutil.copy(clip_path, root / "a.mp4")
    entries = []
    for q, cands in QUESTIONS:
        for ans in cands[:2]:
            entries.append({"video": "a.mp4", "question": q, "candidates": cands, "answer": ans})
    entries.insert(1, {"video": "missing.mp4", "question": QUESTIONS[0][0], "candidates": QUESTIONS[0][1],
                       "answer": QUESTIONS[0][1][0]})
    (root / "task.json").write_text(json.dumps(entries))
    return root


def flow(model_dir, dataset, out, *extra):
    return main(["flow", "--model", str(model_dir), "--data", str(dataset / "task.json"), "--video-root", str(dataset),
                 "--out", str(out), "--no-progress", *extra])


def statuses(path):
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    return {r["sample_id"]: r["status"] for r in rows if r.get("_done")}


LETTER_RULE = ("--samples", "correct_option")  # the random model's full-vocabulary argmax is never a letter


def test_flow_end_to_end_and_resume(model_dir, dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert flow(model_dir, dataset, out, "--target", "cross-frame", "vql-to-ql", "--window", "3", *LETTER_RULE) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "missing.mp4" in err
    st = statuses(out / "records.jsonl")
    assert st["task_1"] == "missing_video" and len(st) == 5
    ok = [s for s, v in st.items() if v == "ok"]
    assert ok and all(v in ("ok", "baseline_incorrect", "missing_video") for v in st.values())
    assert len(ok) + list(st.values()).count("baseline_incorrect") == 4  # one of each answer pair is wrong

    recs = read_records(out / "records.jsonl")
    n_pairs = len(TARGETS["cross-frame"].pairs) + len(TARGETS["vql-to-ql"].pairs)
    assert len(recs) == len(ok) * n_pairs * 6
    assert {r["sample_id"] for r in recs} == set(ok)
    assert all(r["base_letter"] == r["true_letter"] for r in recs)  # --samples correct_option
    for t in ("cross-frame", "vql-to-ql"):
        png = out / f"flow_{t}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == n_pairs * 6
    assert {int(r["n"]) for r in rows} == {len(ok)}

    # rerun with --no-retry-skipped: nothing recomputed, same file
    before = (out / "records.jsonl").read_text()
    assert flow(model_dir, dataset, out, "--target", "cross-frame", "vql-to-ql", "--window", "3", *LETTER_RULE,
                "--no-retry-skipped") == 0
    assert (out / "records.jsonl").read_text() == before
    # rerun by default: only the skipped sample (missing video) is tried again, the rest untouched
    assert flow(model_dir, dataset, out, "--target", "cross-frame", "vql-to-ql", "--window", "3", *LETTER_RULE) == 0
    after = (out / "records.jsonl").read_text().splitlines(keepends=True)
    old = before.splitlines(keepends=True)
    assert [l for l in old if '"task_1"' not in l] == after[:-1] and '"task_1"' in after[-1]
    assert statuses(out / "records.jsonl")["task_1"] == "missing_video"
    before = "".join(after)

    # a run killed mid-sample: the last finished sample's marker and a partial line are gone
    lines = before.splitlines(keepends=True)
    last_done = max(i for i, l in enumerate(lines) if '"_done"' in l and '"ok"' in l)
    cut = "".join(lines[:last_done - 2]) + lines[last_done - 2][:15]
    (out / "records.jsonl").write_text(cut)
    assert len(read_records(out / "records.jsonl")) == len(recs) - n_pairs * 6
    assert flow(model_dir, dataset, out, "--target", "cross-frame", "vql-to-ql", "--window", "3", *LETTER_RULE) == 0
    again = read_records(out / "records.jsonl")
    key = lambda r: (r["sample_id"], r["pair"], r["layer"])  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, recs))
    by = {key(r): r for r in recs}
    assert all(abs(r["ko_prob"] - by[key(r)]["ko_prob"]) < 1e-6 for r in again)


def test_flow_default_is_the_official_correct_rule(model_dir, dataset, tmp_path):
    """Default --samples correct: the baseline's full-vocabulary argmax must be the true letter,
    which the random model never predicts, so every readable sample is skipped."""
    out = tmp_path / "official"
    assert flow(model_dir, dataset, out, "--target", "cross-frame", "--window", "3", "--limit", "3") == 0
    assert sorted(statuses(out / "records.jsonl").values()) == ["baseline_incorrect", "baseline_incorrect",
                                                                 "missing_video"]


def test_flow_compare_model_draws_both(model_dir, dataset, tmp_path):
    from videolens.testing import make_tiny_pllava

    base = make_tiny_pllava(tmp_path / "base-image", seed=5, n_layers=6)
    out = tmp_path / "cmp"
    assert flow(model_dir, dataset, out, "--target", "cross-frame", "--window", "3", "--samples", "all", "--limit", "2",
                "--compare-model", str(base)) == 0
    main_recs, cmp_recs = read_records(out / "records.jsonl"), read_records(out / "compare" / "records.jsonl")
    assert len(main_recs) == len(cmp_recs) == 6
    assert [r["ko_prob"] for r in main_recs] != [r["ko_prob"] for r in cmp_recs]  # two models, two runs
    assert (out / "flow_cross-frame_compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "compare" / "summary.csv").exists()


def test_flow_all_samples_and_limit(model_dir, dataset, tmp_path):
    out = tmp_path / "all"
    assert flow(model_dir, dataset, out, "--target", "question-and-options-to-last", "--window", "2",
                "--samples", "all", "--limit", "3") == 0
    st = statuses(out / "records.jsonl")
    assert sorted(st.values()) == ["missing_video", "ok", "ok"]
    assert len(read_records(out / "records.jsonl")) == 2 * 3 * 6


def test_flow_errors(model_dir, dataset, tmp_path, capsys):
    assert flow(model_dir, dataset, tmp_path / "e1", "--target", "cross-frames") == 2
    err = capsys.readouterr().err
    assert "unknown knockout target 'cross-frames'" in err
    assert all(name in err for name in TARGETS)
    assert flow(model_dir, dataset, tmp_path / "e2", "--target", "cross-frame", "--window", "7") == 2
    assert "window 7 is larger than the model's 6 layers" in capsys.readouterr().err


def test_failure_diagnosis_figures(model_dir, dataset, tmp_path):
    """``--samples all`` draws correct and incorrect samples side by side per target; ``--samples
    incorrect`` keeps only the failures (the random model's argmax is never the true letter)."""
    from videolens.plots.knockout import is_correct, plot_correct_incorrect

    out = tmp_path / "all"
    assert flow(model_dir, dataset, out, "--target", "cross-frame", "--window", "3", "--samples", "all") == 0
    assert (out / "flow_cross-frame_correct_vs_incorrect.png").stat().st_size > 0
    records = read_records(out / "records.jsonl")
    rows = [r for r in records if r.get("target") == "cross-frame"]
    assert rows and not any(is_correct(r) for r in rows)
    first = rows[0]["sample_id"]
    for r in rows:  # make one sample a correct one: its baseline answer is the truth
        if r["sample_id"] == first:
            r["true_t"] = r["base_answer_t"]
    n_all = len({r["sample_id"] for r in rows})
    fig = plot_correct_incorrect(rows, "cross-frame")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["correct samples (n = 1)", f"incorrect samples (n = {n_all - 1})"]
    out2 = tmp_path / "incorrect"
    assert flow(model_dir, dataset, out2, "--target", "cross-frame", "--window", "3", "--samples", "incorrect") == 0
    assert {r["sample_id"] for r in read_records(out2 / "records.jsonl") if r.get("target")} == \
        {r["sample_id"] for r in rows}
