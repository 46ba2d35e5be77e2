"""Nothing silently wrong, nothing lost (issue 30): each test here failed on the code before it.

Runs: a bad window is one sample's skip; the model fingerprint covers every byte; a damaged
records line reruns its sample; replaced videos rerun their samples."""

from __future__ import annotations

import json

import pytest

from test_bad_inputs import run_cli
from test_reliability import SIZES, GOOD, flow_argv, write_data
from videolens.runs import read_records, read_statuses
from videolens.testing import make_tiny_pllava, write_clip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("silent")
    write_clip(root / "clip.mp4", n_frames=8)
    return {"root": root, "model": make_tiny_pllava(root / "model", **SIZES)}


@pytest.mark.parametrize("command", ["flow", "genprob"])
def test_a_window_past_the_video_end_is_that_samples_skip(world, tmp_path, command):
    data = write_data(tmp_path / "d.json", [GOOD, dict(GOOD, start=50, end=60), GOOD])
    out = tmp_path / "out"
    argv = flow_argv(world, data, out)
    if command == "genprob":
        argv = ["genprob", "--model", str(world["model"]), "--data", str(data), "--video-root", str(world["root"]),
                "--out", str(out), "--no-figures", "--no-progress"]
    rc, stdout, err = run_cli(argv)
    assert rc == 0, err
    name = "records.jsonl" if command == "flow" else "genprob.jsonl"
    st = read_statuses(out / name)
    assert st == {"d_0": "ok", "d_1": "skipped: VideoWindowError", "d_2": "ok"}
    assert "d_1" in err and "past the end of" in err and "clip.mp4" in err
    assert run_cli(argv)[0] == 0  # a resume does not stop at the same entry either


def test_weights_changed_in_the_middle_are_a_new_model(world, tmp_path):
    """Same size, same first and last MiB, other bytes in the middle: another model."""
    from videolens.fingerprint import file_digest, model_fingerprint

    f = tmp_path / "model.safetensors"
    blob = bytearray(b"\0" * (3 << 20))
    f.write_bytes(bytes(blob))
    before = file_digest(f)
    assert file_digest(f) == before  # cached: same answer
    blob[(3 << 20) // 2] = 1
    f.write_bytes(bytes(blob))
    assert file_digest(f) != before
    (tmp_path / "config.json").write_text("{}")
    assert set(model_fingerprint(tmp_path)) == {"config.json", "model.safetensors"}


def test_a_run_header_says_what_the_fingerprint_covers(world, tmp_path):
    data = write_data(tmp_path / "d.json", [GOOD])
    assert run_cli(flow_argv(world, data, tmp_path / "out"))[0] == 0
    header = json.loads((tmp_path / "out" / "records.jsonl").read_text().splitlines()[0])["config"]
    assert header["fingerprint_method"] == "sha256 of every whole file"


def _lines(path):
    return path.read_text().splitlines()


def test_a_damaged_middle_line_reruns_its_sample(world, tmp_path):
    data = write_data(tmp_path / "d.json", [GOOD, dict(GOOD, question="What else moves?"), GOOD])
    out = tmp_path / "out"
    argv = flow_argv(world, data, out)
    assert run_cli(argv)[0] == 0
    path = out / "records.jsonl"
    before = read_records(path)
    per_sample = {sid: sum(r["sample_id"] == sid for r in before) for sid in ("d_0", "d_1", "d_2")}
    lines = _lines(path)
    i = next(i for i, l in enumerate(lines) if json.loads(l).get("sample_id") == "d_1" and not json.loads(l).get("_done"))
    lines[i + 1] = lines[i + 1][: len(lines[i + 1]) // 2]  # a damaged record inside d_1
    path.write_text("".join(l + "\n" for l in lines))
    with pytest.warns(UserWarning, match="d_1"):
        assert "d_1" not in read_statuses(path)  # never read as finished with a record missing
    rc, _, err = run_cli(argv)
    assert rc == 0, err
    assert "damaged" in err and "d_1" in err
    after = read_records(path)
    assert {sid: sum(r["sample_id"] == sid for r in after) for sid in per_sample} == per_sample


def test_a_damaged_header_is_refused(world, tmp_path):
    from videolens.runs import RecordWriter, RunConfigMismatch

    p = tmp_path / "r.jsonl"
    with RecordWriter(p, {"a": 1}) as w:
        w.write_sample("x", [{"v": 1}])
    lines = _lines(p)
    p.write_text("".join(l + "\n" for l in ["{oops", *lines[1:]]))
    with pytest.raises(RunConfigMismatch, match="first line"):
        RecordWriter(p, {"a": 1})


def test_a_replaced_video_reruns_its_samples(world, tmp_path):
    import os

    root = tmp_path / "videos"
    root.mkdir()
    write_clip(root / "clip.mp4", n_frames=8)
    write_clip(root / "other.mp4", n_frames=8)
    data = write_data(tmp_path / "d.json", [GOOD, dict(GOOD, video="other.mp4")])
    out = tmp_path / "out"
    argv = flow_argv(dict(world, root=root), data, out)
    assert run_cli(argv)[0] == 0
    write_clip(root / "other.mp4", n_frames=8, seed=5)
    st = (root / "other.mp4").stat()
    os.utime(root / "other.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rc, _, err = run_cli(argv)
    assert rc == 0, err
    assert "d_1: its video changed" in err and "d_0" not in err
    recs = read_records(out / "records.jsonl")
    ids = [r["sample_id"] for r in recs]
    assert ids.count("d_0") == ids.count("d_1")  # the old records of d_1 are gone, not mixed in


def _edit_vocab(model_dir, change):
    tj = json.loads((model_dir / "tokenizer.json").read_text())
    change(tj["model"]["vocab"])
    (model_dir / "tokenizer.json").write_text(json.dumps(tj))


@pytest.mark.parametrize("change,expected", [
    (lambda v: [v.pop(L) for L in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"], "are the unknown token"),
    (lambda v: v.update(What=10_000), "lie outside the embedding"),
], ids=["letters-unknown", "ids-past-embedding"])
def test_a_tokenizer_that_does_not_fit_is_refused_at_load(world, tmp_path, change, expected):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(world["model"], d)
    _edit_vocab(d, change)
    rc, out, err = run_cli(["answer", "--model", str(d), "--video", str(world["root"] / "clip.mp4"),
                            "--question", "What moves?", "--candidates", "left", "right"])
    assert rc == 2 and "the tokenizer does not fit the model" in err and expected in err, err
    assert "Traceback" not in err


def test_token_ids_past_the_embedding_raise_in_one_line(world):
    import torch

    import videolens as vl
    from videolens.errors import TokenizerMismatchError

    m = vl.HookedVideoLLM.from_pretrained(world["model"], device="cpu")
    with pytest.raises(TokenizerMismatchError, match="outside the embedding"):
        m(torch.tensor([[1, m.cfg.d_vocab + 3]]))
