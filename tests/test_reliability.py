"""Results that cannot silently mix or vanish (issue: reliability): the folder lock, the run's
identity checked on resume, retried skips, per-sample skips for bad entries, non-finite outputs."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_bad_inputs import run_cli
from videolens.errors import FramePoolingWarning
from videolens.running.records import FolderInUseError, RecordWriter, folder_lock, read_records, read_statuses
from videolens.testing import make_tiny_pllava, write_clip

SIZES = dict(n_layers=2, pooling_shape=(2, 2, 2), extra_config={"num_frames": 2}, d_model=32, n_heads=2,
             vision_layers=1, d_vision=16, image_size=16)
GOOD = {"video": "clip.mp4", "question": "What moves?", "candidates": ["left", "right"], "answer": "left"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    write_clip(root / "clip.mp4", n_frames=8)
    return {"root": root, "model": make_tiny_pllava(root / "model", **SIZES)}


def flow_argv(world, data, out, *extra):
    return ["flow", "--model", str(world["model"]), "--data", str(data), "--video-root", str(world["root"]),
            "--target", "cross-frame", "--window", "1", "--samples", "all", "--out", str(out), "--no-figures",
            "--no-progress", *extra]


def write_data(path, entries):
    path.write_text(json.dumps(entries))
    return path


def _hold(folder, ready, release):
    with folder_lock(folder, "videolens flow"):
        ready.set()
        release.wait(60)


def test_a_second_run_into_a_folder_in_use_stops_at_once(world, tmp_path):
    import multiprocessing

    out = tmp_path / "out"
    ctx = multiprocessing.get_context("fork")  # the child shares this process's imports: no second start-up
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(out), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        data = write_data(tmp_path / "d.json", [GOOD])
        rc, stdout, err = run_cli(flow_argv(world, data, out))
        assert rc == 2 and f"{out} is in use by process {holder.pid} (started " in err and "videolens flow" in err
        assert "Moving model to device" not in stdout + err  # refused before any work
        with pytest.raises(FolderInUseError):
            RecordWriter(out / "records.jsonl", {})
    finally:
        holder.kill()  # SIGKILL: the OS drops the lock with the process
        holder.join()
    rc, _, err = run_cli(flow_argv(world, data, out))
    assert rc == 0, err


def test_folder_lock_is_reentrant_in_one_process(tmp_path):
    with folder_lock(tmp_path, "outer"):
        with RecordWriter(tmp_path / "a.jsonl", {"x": 1}) as w:
            w.write_sample("s", [{"v": 1}])
        with RecordWriter(tmp_path / "b.jsonl", {"x": 1}) as w:
            assert not w.is_done("s")
    assert read_statuses(tmp_path / "a.jsonl") == {"s": "ok"}


def test_resume_refuses_other_weights_at_the_same_path(world, tmp_path):
    model = make_tiny_pllava(tmp_path / "model", seed=3, **SIZES)
    data = write_data(tmp_path / "d.json", [GOOD])
    argv = flow_argv(dict(world, model=model), data, tmp_path / "out")
    assert run_cli(argv)[0] == 0
    assert run_cli(argv)[0] == 0  # same model and data: resumes
    sd = load_file(str(model / "model.safetensors"))
    k = next(k for k in sd if k.endswith("norm.weight"))
    sd[k] = sd[k] * 1.5
    save_file(sd, str(model / "model.safetensors"))
    rc, _, err = run_cli(argv)
    assert rc == 2 and "model_fingerprint.model.safetensors: was" in err and "choose a new --out" in err


def test_resume_refuses_other_data_with_the_same_file_name(world, tmp_path):
    data = write_data(tmp_path / "d.json", [GOOD])
    argv = flow_argv(world, data, tmp_path / "out")
    assert run_cli(argv)[0] == 0
    write_data(data, [dict(GOOD, question="What else moves?")])  # same name, same default ids
    rc, _, err = run_cli(argv)
    assert rc == 2 and "data.files." in err and "d.json" in err
    assert len(read_records(tmp_path / "out" / "records.jsonl")) > 0  # the earlier results are untouched


def test_bad_entry_is_that_samples_skip_and_retried_on_resume(world, tmp_path):
    data = write_data(tmp_path / "d.json", [GOOD, dict(GOOD, start=5, end=2), dict(GOOD, video="later.mp4")])
    out = tmp_path / "out"
    rc, _, err = run_cli(flow_argv(world, data, out))
    assert rc == 0, err
    st = read_statuses(out / "records.jsonl")
    assert st == {"d_0": "ok", "d_1": "skipped: InvalidSampleError", "d_2": "missing_video"}
    assert "d.json: entry 1: start=5.0 must be before end=2.0" in err
    (world["root"] / "later.mp4").write_bytes((world["root"] / "clip.mp4").read_bytes())
    try:
        assert run_cli(flow_argv(world, data, out))[0] == 0  # the missing video arrived: retried
        assert read_statuses(out / "records.jsonl")["d_2"] == "ok"
    finally:
        (world["root"] / "later.mp4").unlink()
    ids = [r["sample_id"] for r in read_records(out / "records.jsonl")]
    assert set(ids) == {"d_0", "d_2"} and ids.count("d_0") == ids.count("d_2")  # nothing duplicated


def test_writer_keeps_skips_when_asked(tmp_path):
    p = tmp_path / "r.jsonl"
    with RecordWriter(p, {"a": 1}) as w:
        w.write_sample("x", [], status="missing_video")
        w.write_sample("y", [], status="baseline_incorrect")
    with RecordWriter(p, {"a": 1}, retry_skipped=False) as w:
        assert w.is_done("x") and w.is_done("y")
    with RecordWriter(p, {"a": 1}) as w:
        assert not w.is_done("x") and w.is_done("y") and w.retried == ["x"]
    assert read_statuses(p) == {"y": "baseline_incorrect"}  # the stale skip is gone until retried


def test_writer_records_non_finite_numbers_as_a_status(tmp_path):
    p = tmp_path / "r.jsonl"
    with RecordWriter(p, {}) as w:
        assert w.write_sample("x", [{"p": 0.5, "probs": {"A": float("nan")}}]) == "non_finite"
        assert w.write_sample("y", [{"p": 0.5}]) == "ok"
    assert read_statuses(p) == {"x": "non_finite", "y": "ok"}
    assert [r["sample_id"] for r in read_records(p)] == ["y"]
    marker = next(r for r in map(json.loads, p.read_text().splitlines()) if r.get("_done") and r["sample_id"] == "x")
    assert "probs.A" in marker["message"]


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    path = make_tiny_pllava(tmp_path_factory.mktemp("nan") / "model", **SIZES)
    sd = load_file(str(path / "model.safetensors"))
    sd["language_model.model.norm.weight"] = torch.full_like(sd["language_model.model.norm.weight"], float("nan"))
    save_file(sd, str(path / "model.safetensors"))
    return path


def test_non_finite_outputs_are_never_scored(world, nan_model, tmp_path):
    rc, out, err = run_cli(["answer", "--model", str(nan_model), "--video", str(world["root"] / "clip.mp4"),
                            "--question", "q", "--candidates", "a", "b"])
    assert rc == 2 and "NaN/inf" in err and "(A)" not in out
    data = write_data(tmp_path / "d.json", [GOOD])
    argv = flow_argv(dict(world, model=nan_model), data, tmp_path / "flow")
    rc, out, err = run_cli(argv)
    assert rc == 0, err
    assert read_statuses(tmp_path / "flow" / "records.jsonl") == {"d_0": "non_finite"}
    assert read_records(tmp_path / "flow" / "records.jsonl") == []
    rc, out, err = run_cli(["pathways", "--model", str(nan_model), "--spec", "llava-next-7b-video-ft", "--data", str(data),
                            "--video-root", str(world["root"]), "--out", str(tmp_path / "pw"), "--no-figures",
                            "--no-progress"])
    assert rc == 0, err
    assert read_statuses(tmp_path / "pw" / "records.jsonl") == {"d_0": "non_finite"}
    rc, out, err = run_cli(["genprob", "--model", str(nan_model), "--data", str(data), "--video-root", str(world["root"]),
                            "--out", str(tmp_path / "gp"), "--no-figures", "--no-progress"])
    assert read_statuses(tmp_path / "gp" / "genprob.jsonl") == {"d_0": "non_finite"}


def test_default_window_adapts_to_the_model_and_says_so(world, tmp_path):
    data = write_data(tmp_path / "d.json", [GOOD])
    argv = [a for a in flow_argv(world, data, tmp_path / "out") if a not in ("--window", "1")]
    rc, _, err = run_cli(argv)
    assert rc == 0, err
    assert "--window not given: 2 (the model has 2 layers" in err
    header = json.loads((tmp_path / "out" / "records.jsonl").read_text().splitlines()[0])
    assert header["config"]["window"] == 2


def test_frames_other_than_the_pooling_depth_warn_in_one_line(world, tmp_path):
    data = write_data(tmp_path / "d.json", [GOOD, dict(GOOD, question="Which way?")])
    with warnings.catch_warnings():
        warnings.simplefilter("default", FramePoolingWarning)  # the suite ignores it for its tiny models
        rc, _, err = run_cli(flow_argv(world, data, tmp_path / "out", "--num-frames", "4"))
    assert rc == 0, err
    warned = [l for l in err.splitlines() if "warning: num_frames=4" in l]
    assert len(warned) == 1 and warned[0].startswith("videolens flow: warning:")
    header = json.loads((tmp_path / "out" / "records.jsonl").read_text().splitlines()[0])["config"]
    assert header["num_frames"] == 4 and header["video_grid"][0] == 2  # the run records both
