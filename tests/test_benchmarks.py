"""The GPU benchmarks' scripts at toy size on the CPU, so a lent GPU's minutes are never spent on a
script that does not run (slow: ``pytest -m slow``)."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def paper_scale(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import paper_scale

    return paper_scale


@pytest.mark.slow
@pytest.mark.parametrize("family", ["pllava-7b", "videollama3-7b", "qwen2_5_vl-7b"])
def test_paper_scale_runs_its_three_methods_and_they_agree(paper_scale, family, tmp_path, capsys):
    """Every path of benchmarks/paper_scale.py at toy size: the shape built in bf16 from memory,
    the paper's full sweep (4 targets, every centre layer) by videolens, the careful transformers
    user and the paper's method, whose option probabilities agree to bf16 rounding; the work
    model counts fewer rows for videolens than for a whole forward per condition."""
    out = paper_scale.main(["--family", family, "--tiny", "--paper-every", "44", "--json", str(tmp_path / "r.json"),
                            "--profile", str(tmp_path / "p.txt")])
    printed = capsys.readouterr().out
    assert out["conditions"] == 44 and out["window"] == 3  # 4 targets' 11 pairs x 4 centre layers
    assert out["positions"] > 1200  # the paper's layout, kept at toy size
    assert out["max_prob_diff"]["b"] < 2e-2 * out["max_prob"] and out["max_prob_diff"]["c"] < 5e-2 * out["max_prob"]
    assert 0 < out["work_rows_layers"]["a"] < out["work_rows_layers"]["full"]
    assert all(t > 0 for t in out["seconds"].values())
    assert "(b)/(a):" in printed and "(a) / physical limit:" in printed
    # the plain forward beside transformers SDPA on the same embeddings: the same logits up to bf16 rounding
    assert "forward without hooks, videolens / transformers sdpa:" in printed
    assert all(t > 0 for t in out["forward_s"].values()) and out["forward_max_logit_diff"] < 0.05
    assert (tmp_path / "r.json").read_text().startswith("{")
    prof = out["profile_a"]  # (a) once more under the profiler: where its time goes
    assert 0 < prof["busy_s"] <= prof["wall_s"] and prof["launches"] > 100
    assert prof["by_kind_s"]["matmul"] > 0 and prof["by_kind_s"]["attention"] > 0
    assert "scaled_dot_product" in (tmp_path / "p.txt").read_text()


@pytest.mark.slow
def test_paper_scale_without_the_shared_clip_writes_a_synthetic_one(paper_scale, tmp_path, monkeypatch, capsys):
    """Without ../shared (a user's machine), the run takes a synthetic clip written as an mp4: each
    family samples its frames from a file, as from the real clip (an in-memory clip of 16 frames
    was refused by the 8-frame families)."""
    monkeypatch.setattr(paper_scale, "SHARED", tmp_path / "no-shared")
    out = paper_scale.main(["--family", "pllava-7b", "--tiny", "--paper-every", "44", "--forward-reps", "1"])
    assert "video synthetic.mp4" in capsys.readouterr().out
    assert out["conditions"] == 44 and out["positions"] > 1200


@pytest.mark.slow
def test_gpu_check_script_runs_and_returns_one_tar(tmp_path):
    """benchmarks/gpu_check.sh's dry run (DEVICE=cpu TINY=1): one family, the width-2048 sweep step and
    the full-size load step end to end, their printouts, figures and profile in $OUT/results.tar (the
    device tool returns at most 8 files), each step's own exit status printed."""
    import os
    import subprocess
    import tarfile

    env = dict(os.environ, DEVICE="cpu", TINY="1", OUT=str(tmp_path))
    run = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "pllava-7b", "sweep2048", "load7b", "no-such-step"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("exit 0") == 3 and "(b)/(a):" in run.stdout and "overall (1)/(4):" in run.stdout
    assert "exit 2" in run.stdout.split("== no-such-step")[1]  # a failing step says so; the others still ran
    assert "videolens / transformers, load:" in run.stdout
    assert sorted(os.listdir(tmp_path)) == ["results.tar"]
    with tarfile.open(tmp_path / "results.tar") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"device.txt", "pllava-7b.json", "pllava-7b.log", "pllava-7b.profile.txt", "sweep2048.log", "load7b.log"} <= names


def test_paper_scale_shapes_are_the_released_configs(paper_scale):
    """The shapes are the released models' (parameters in the known range), and --tiny keeps the
    grouped-query ratio and the vocabulary."""
    S = paper_scale.SHAPES
    assert S["pllava-7b"].text["hidden_size"] == 4096 and S["pllava-13b"].text["num_hidden_layers"] == 40
    assert S["videollama3-7b"].text["num_key_value_heads"] == 4 and S["internvl-4b"].vision["image_size"] == 448
    t = paper_scale.tiny(S["videollama3-7b"])
    assert t.text["num_attention_heads"] // t.text["num_key_value_heads"] == 4 and t.text["vocab_size"] == 152064

    def text_params(t):
        d, f, L, V = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"], t["vocab_size"]
        kv = d * t["num_key_value_heads"] // t["num_attention_heads"]
        return L * (2 * d * d + 2 * d * kv + 3 * d * f) + 2 * V * d

    assert 6.5e9 < text_params(S["pllava-7b"].text) < 7.0e9
    assert 12.8e9 < text_params(S["pllava-13b"].text) < 13.3e9
    assert 3.7e9 < text_params(S["internvl-4b"].text) < 3.9e9
    assert 7.4e9 < text_params(S["videollama3-7b"].text) < 7.8e9  # Qwen2.5-7B: 7.6 B
    assert text_params(S["qwen2_5_vl-7b"].text) == text_params(S["videollama3-7b"].text)  # the same Qwen2.5-7B
    q = S["qwen2_5_vl-7b"]
    assert sum(q.text["mrope_section"]) == q.text["hidden_size"] // q.text["num_attention_heads"] // 2
    tq = paper_scale.tiny(q)
    assert sum(tq.text["mrope_section"]) == tq.text["hidden_size"] // tq.text["num_attention_heads"] // 2
    assert tq.vision["fullatt_block_indexes"] == [1] and tq.vision["depth"] == 2
