"""Checkpoints by hub id and by known name (issue 31), resolved offline through huggingface_hub's
own code against a cache laid out as huggingface_hub lays it out (tests/hubcache.py)."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
import videolens.sources.hub
from test_bad_inputs import run_cli
from hubcache import write_hub_cache
from videolens.sources.hub import HubError, KnownModel, MODELS, known_model

REPO = "tiny-org/tiny-pllava"


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and a cache of our own (huggingface_hub reads both as module constants)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_hub_id_loads_from_the_cache_offline(offline, tiny_pllava_dir, tiny_pllava, inputs):
    snap = write_hub_cache(offline, REPO, tiny_pllava_dir)
    model = vl.HookedVideoLLM.from_pretrained(REPO, device="cpu")
    assert model.checkpoint_path == str(snap)
    assert torch.allclose(model(inputs), tiny_pllava(inputs), atol=1e-6)
    assert model.fingerprint == tiny_pllava.fingerprint  # the same weights, by content


def test_a_known_name_applies_the_papers_settings_and_arguments_win(offline, tiny_pllava_dir, monkeypatch):
    write_hub_cache(offline, REPO, tiny_pllava_dir)
    row = KnownModel(name="tiny-known", hub_id=REPO, role="test", options={"pooling_shape": (2, 2, 2)}, num_frames=2,
                     template="eval_mvbench_open")
    monkeypatch.setitem(MODELS, "tiny-known", row)
    assert known_model("TINY-ORG/tiny-pllava") is row
    model = vl.HookedVideoLLM.from_pretrained("tiny-known", device="cpu")
    assert model.default_num_frames == 2 and model.template.name == "eval_mvbench_open"
    assert model.vision.output_grid(2)[1:] == (2, 2)
    model = vl.HookedVideoLLM.from_pretrained("tiny-known", device="cpu", pooling_shape=(4, 2, 2))
    assert model.default_num_frames == 4  # an explicit pooling shape wins, frames follow it


def test_the_cli_takes_a_hub_id(offline, tiny_pllava_dir, clip_path):
    write_hub_cache(offline, REPO, tiny_pllava_dir)
    rc, out, err = run_cli(["answer", "--model", REPO, "--video", str(clip_path), "--question", "What moves?",
                            "--candidates", "left", "right"])
    assert rc == 0, err
    assert "chosen" in out


@pytest.mark.parametrize("case,expected", [
    ("not-cached", "not in the local hub cache and downloads are off"),
    ("no-weights", "holds no .safetensors weights"),
    ("revision", "not in the local hub cache"),
    ("not-an-id", "checkpoint folder not found"),
])
def test_hub_problems_end_in_one_line(offline, tiny_pllava_dir, clip_path, case, expected):
    argv = ["--video", str(clip_path), "--question", "q", "--candidates", "a", "b"]
    model = REPO
    if case == "no-weights":
        write_hub_cache(offline, REPO, tiny_pllava_dir, skip=("model.safetensors",))
    if case == "revision":
        write_hub_cache(offline, REPO, tiny_pllava_dir)
        argv += ["--revision", "v9"]
    if case == "not-an-id":
        model = "./nowhere/at/all"
    rc, out, err = run_cli(["answer", "--model", model, *argv])
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1 and expected in lines[0] and "Traceback" not in err, err
    if case != "not-an-id":
        with pytest.raises(HubError):
            vl.HookedVideoLLM.from_pretrained(REPO, device="cpu", revision="v9" if case == "revision" else None)


def test_every_known_checkpoint_is_well_formed():
    from videolens.pathways.loading import load_spec
    from videolens.prompting.prompts import TEMPLATES

    assert {"llava-next-7b-video-ft", "llava-next-13b-video-ft", "mini-internvl-4b-video-ft", "videollama3-7b",
            "llava-v1.6-vicuna-7b", "mini-internvl-chat-4b-v1-5"} <= set(MODELS)
    for m in MODELS.values():
        assert vl.hub.is_hub_id(m.hub_id) and (m.template is None or m.template in TEMPLATES), m.name
        assert m.base is None or m.base in MODELS, m.name
        if m.pathway_spec:
            load_spec(m.pathway_spec)  # a shipped spec of that name


# ---- the download path itself, through huggingface_hub's HTTP client against a local stand-in hub ----
@pytest.fixture()
def hub(monkeypatch, tmp_path, tiny_pllava_dir):
    """A local hub serving ``tiny-org/tiny-pllava`` (and a pickles-only and a gated repository), with
    huggingface_hub pointed at it and at an empty cache."""
    import shutil

    from fakehub import FakeHub, use_hub

    pickles = tmp_path / "pickles"
    pickles.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_pllava_dir / f, pickles / f)
    (pickles / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with FakeHub({REPO: tiny_pllava_dir, "tiny-org/pickles": pickles, "tiny-org/gated": tiny_pllava_dir},
                 gated={"tiny-org/gated"}) as server:
        use_hub(monkeypatch, server, tmp_path / "hub-cache")
        yield server


def test_a_hub_id_downloads_then_loads_offline(hub, tiny_pllava, inputs, clip_path, monkeypatch):
    from huggingface_hub import constants

    rc, out, err = run_cli(["download", REPO])
    assert rc == 0, err
    fetched = {r.split("/")[-1] for r in hub.requests if r.startswith("GET") and "/resolve/" in r}
    assert fetched == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                       "preprocessor_config.json"}  # allow_patterns: nothing else
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a compute node without network
    n = len(hub.requests)
    model = vl.HookedVideoLLM.from_pretrained(REPO, device="cpu")
    assert len(hub.requests) == n  # served from the cache
    assert torch.allclose(model(inputs), tiny_pllava(inputs), atol=1e-6)
    rc, out, err = run_cli(["answer", "--model", REPO, "--video", str(clip_path), "--question", "What moves?",
                            "--candidates", "left", "right"])
    assert rc == 0 and "chosen" in out, err


def test_an_interrupted_download_resumes(hub, tiny_pllava, inputs):
    hub.fail_after = 1000  # the first transfer of a file above 1000 bytes breaks off
    try:
        model = vl.HookedVideoLLM.from_pretrained(REPO, device="cpu")
    except HubError:  # huggingface_hub gave up on the broken transfer: a second call resumes it
        model = vl.HookedVideoLLM.from_pretrained(REPO, device="cpu")
    gets = [r.split(" [")[0] for r in hub.requests if r.startswith("GET") and "/resolve/" in r]
    assert len(gets) > len(set(gets)), "\n".join(hub.requests)  # the broken transfer was taken up again
    assert torch.allclose(model(inputs), tiny_pllava(inputs), atol=1e-6)


@pytest.mark.parametrize("repo,revision,expected", [
    ("tiny-org/nothing", None, "no such repository on the hub"),
    ("tiny-org/gated", None, "a gated repository: accept its terms on the hub, then log in"),
    (REPO, "v9", "revision 'v9' not found"),
    ("tiny-org/pickles", None, "holds its weights only as pickles (pytorch_model.bin); videolens never unpickles"),
])
def test_hub_server_answers_end_in_one_line(hub, clip_path, repo, revision, expected):
    argv = ["answer", "--model", repo, "--video", str(clip_path), "--question", "q", "--candidates", "a", "b"]
    rc, out, err = run_cli(argv + (["--revision", revision] if revision else []))
    lines = [l for l in err.splitlines() if l.strip() and "Fetching" not in l and "%|" not in l]
    assert rc == 2 and len(lines) == 1 and expected in lines[0], err


# ---- benchmarks by name ----------------------------------------------------------------------------
@pytest.fixture()
def tvbench_repo(tmp_path, clip_path):
    """A tiny dataset repository in TVBench's layout: json/<task>.json, videos under video/<task>/
    (action_sequence as files, moving_direction as a zip archive), and a task nobody asks for."""
    import json
    import shutil
    import zipfile

    repo = tmp_path / "tvbench-repo"
    entry = {"video": "clip.mp4", "question": "What moves?", "candidates": ["left", "right"], "answer": "left"}
    for task in ("action_sequence", "moving_direction", "object_count"):
        (repo / "json").mkdir(parents=True, exist_ok=True)
        (repo / "json" / f"{task}.json").write_text(json.dumps([entry, dict(entry, answer="right")]))
    (repo / "video" / "action_sequence").mkdir(parents=True)
    shutil.copy(clip_path, repo / "video" / "action_sequence" / "clip.mp4")
    with zipfile.ZipFile(repo / "video" / "moving_direction.zip", "w") as z:
        z.write(clip_path, "moving_direction/clip.mp4")
    (repo / "video" / "object_count").mkdir()
    (repo / "video" / "object_count" / "big.mp4").write_bytes(b"x" * 5000)
    return repo


def test_a_benchmark_by_name_downloads_its_tasks_only_and_runs(tvbench_repo, tiny_pllava_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from fakehub import FakeHub, use_hub
    from videolens.running.records import read_statuses

    with FakeHub({}, datasets={"FunAILab/TVBench": tvbench_repo}) as server:
        use_hub(monkeypatch, server, tmp_path / "cache")
        argv = ["genprob", "--model", str(tiny_pllava_dir), "--data", "tvbench:action_sequence,moving_direction",
                "--out", str(tmp_path / "out"), "--no-figures", "--no-progress"]
        rc, out, err = run_cli(argv)
        assert rc == 0, err
        got = [r for r in server.requests if r.startswith("GET") and "/resolve/" in r]
        assert got and not any("object_count" in r for r in got)  # only the tasks asked for
        statuses = read_statuses(tmp_path / "out" / "genprob.jsonl")
        assert len(statuses) == 4 and set(statuses.values()) == {"ok"}  # the zipped task's videos found too
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a rerun on a node without network resumes
        n = len(server.requests)
        assert run_cli(argv)[0] == 0 and len(server.requests) == n
        rc, _, err = run_cli(argv[:4] + ["tvbench:sideways"] + argv[5:])
        assert rc == 2 and "tvbench has no task(s) ['sideways']" in err


@pytest.fixture()
def mvbench_repo(tmp_path, clip_path):
    """A tiny dataset repository in MVBench's layout: json/<task>.json, each source's videos in one
    archive video/<source>.zip that unpacks to video/<source>/<its folder>/."""
    import json
    import zipfile

    repo = tmp_path / "mvbench-repo"
    (repo / "json").mkdir(parents=True)
    entry = {"video": "clip.mp4", "question": "What moves?", "candidates": ["left", "right"], "answer": "left"}
    for task in ("action_sequence", "object_interaction", "moving_direction", "fine_grained_pose"):
        (repo / "json" / f"{task}.json").write_text(json.dumps([entry, dict(entry, answer="right")]))
    (repo / "video").mkdir()
    with zipfile.ZipFile(repo / "video" / "star.zip", "w") as z:
        z.write(clip_path, "star/Charades_v1_480/clip.mp4")
    with zipfile.ZipFile(repo / "video" / "clevrer.zip", "w") as z:
        z.write(clip_path, "clevrer/video_validation/clip.mp4")
    return repo


def test_mvbench_by_name_unpacks_each_source_archive_once(mvbench_repo, tiny_pllava_dir, tmp_path, monkeypatch):
    from fakehub import FakeHub, use_hub
    from videolens.running.records import read_statuses
    from videolens.sources import datasets

    with FakeHub({}, datasets={"OpenGVLab/MVBench": mvbench_repo}) as server:
        use_hub(monkeypatch, server, tmp_path / "cache")
        files, roots = datasets.fetch("mvbench:action_sequence,object_interaction")
        assert [f.name for f in files] == ["action_sequence.json", "object_interaction.json"]
        assert roots[0] == roots[1] and (roots[0] / "clip.mp4").is_file() and roots[0].name == "Charades_v1_480"
        got = [r for r in server.requests if r.startswith("GET") and "/resolve/" in r]
        assert not any("clevrer" in r or "moving_direction" in r for r in got)  # only what the tasks need
        argv = ["genprob", "--model", str(tiny_pllava_dir), "--data", "mvbench:moving_direction",
                "--out", str(tmp_path / "out"), "--no-figures", "--no-progress"]
        rc, _, err = run_cli(argv)
        assert rc == 0, err
        assert set(read_statuses(tmp_path / "out" / "genprob.jsonl").values()) == {"ok"}
        rc, _, err = run_cli(argv[:4] + ["mvbench:fine_grained_pose"] + argv[5:])
        assert rc == 2 and "task 'fine_grained_pose' cannot be fetched here: its NTU RGB+D videos" in err


def test_models_lists_the_table_and_what_is_cached(offline, tiny_pllava_dir):
    snap = write_hub_cache(offline, MODELS["llava-next-7b-video-ft"].hub_id, tiny_pllava_dir)
    rc, out, err = run_cli(["models"])
    assert rc == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == set(MODELS)
    assert str(snap) in rows["llava-next-7b-video-ft"] and "8-12-12" in rows["llava-next-7b-video-ft"]
    assert rows["videollama3-7b"].rstrip().endswith("no")


def test_a_benchmark_task_missing_from_its_repository_is_named(tvbench_repo, tiny_pllava_dir, tmp_path, monkeypatch):
    from fakehub import FakeHub, use_hub

    (tvbench_repo / "json" / "moving_direction.json").unlink()
    with FakeHub({}, datasets={"FunAILab/TVBench": tvbench_repo}) as server:
        use_hub(monkeypatch, server, tmp_path / "cache")
        rc, _, err = run_cli(["genprob", "--model", str(tiny_pllava_dir), "--data", "tvbench:moving_direction",
                              "--out", str(tmp_path / "out"), "--no-figures"])
    lines = [l for l in err.splitlines() if ": error: " in l]
    assert rc == 2 and len(lines) == 1 and "no json/moving_direction.json in the repository" in lines[0], err


def test_the_readme_lists_every_known_checkpoint():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("### Known checkpoints"):readme.index("## Checkpoint families")]
    rows = [l for l in table.splitlines() if l.startswith("| `")]
    assert len(rows) == len(MODELS)
    for m in MODELS.values():
        assert f"| `{m.name}` | `{m.hub_id}` |" in table, m.name
