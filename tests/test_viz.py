"""Video-aware attention views: pooling exactness, labels, circuitsvis pages, overlays, knockout views."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

import videolens as vl
from videolens.viz import (
    compare_knockout,
    heads_html,
    heads_panel,
    page_html,
    plot_overlay,
    pool_pattern,
    save_html,
    slot_frames,
    token_units,
    video_attention,
    video_tokens_panel,
)

from conftest import DIRECTION_CANDIDATES as CANDIDATES, DIRECTION_QUESTION as QUESTION  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_pllava):
    return tiny_pllava


@pytest.fixture(scope="module")
def inputs(direction_inputs):
    return direction_inputs


@pytest.fixture(scope="module")
def cache(model, inputs):
    with torch.no_grad():
        _, c = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_pattern"))
    return c


def _brute(pattern, units):
    """pooled[h, U, K] = mean_{q in U} sum_{k in K} pattern[h, q, k], by loops."""
    n = len(units)
    out = torch.zeros(pattern.shape[0], n, n)
    for u in range(n):
        qs = units.positions_of(u)
        for k in range(n):
            ks = units.positions_of(k)
            out[:, u, k] = pattern[:, qs][:, :, ks].sum(-1).mean(-1)
    return out


@pytest.mark.parametrize("video,block", [("frame", (1, 1)), ("patch", (1, 1)), ("patch", (3, 3))])
def test_pool_pattern_equals_unpooled_sums(inputs, video, block):
    L = inputs.layout
    S = L.seq_len
    g = torch.Generator().manual_seed(0)
    pattern = torch.rand(2, S, S, generator=g).tril()
    pattern = pattern / pattern.sum(-1, keepdim=True)
    units = token_units(L, L.positions("question").tolist() + [L.last], video=video, block=block)
    pooled = pool_pattern(pattern, units)
    assert torch.allclose(pooled, _brute(pattern, units), atol=1e-5)
    assert torch.allclose(pooled.sum(-1), torch.ones(2, len(units)), atol=1e-5)  # rows still sum to 1


def test_units_cover_every_position_once(inputs):
    L = inputs.layout
    units = token_units(L, [L.last], video="patch", block=(3, 3))
    assert int(units.counts.sum()) == L.seq_len
    assert units.index.min() == 0 and units.index.max() == len(units) - 1
    # video units hold exactly the video tokens
    vid = torch.tensor([i for i, b in enumerate(units.video_block.tolist()) if b >= 0])
    assert sorted(torch.isin(units.index, vid).nonzero().flatten().tolist()) == L.video_positions.tolist()


def test_view_per_frame_matches_cached_pattern(model, inputs, cache):
    L = inputs.layout
    layers = [1, 2]
    view = video_attention(model, inputs, query="question", layers=layers)
    q = L.positions("question")
    want = torch.stack([
        torch.stack([cache["pattern", l][0][:, q][:, :, f.positions()].sum(-1).mean(-1) for f in L.frames], -1)
        for l in layers
    ]).mean(0)  # [heads, T]
    assert view.matrix.shape[0] == model.cfg.n_heads
    assert torch.allclose(view.per_frame(), want, atol=1e-5)
    # the hook path and the cache path give the same pooled matrix
    from_cache = video_attention(model, inputs, query="question", layers=layers, cache=cache)
    assert torch.allclose(view.matrix, from_cache.matrix, atol=1e-6)


def test_patch_pooling_adds_up_to_frames_and_heads_average(model, inputs, cache):
    frames = video_attention(model, inputs, query="last", layers=2, video="frame", cache=cache)
    patches = video_attention(model, inputs, query="last", layers=2, video="patch", cache=cache)
    blocks = video_attention(model, inputs, query="last", layers=2, video="patch", block=(3, 3), cache=cache)
    T, h, w = inputs.layout.video_grid
    assert patches.to_video().shape == (model.cfg.n_heads, T, h, w)
    assert torch.allclose(patches.to_video().sum((-1, -2)), frames.per_frame(), atol=1e-5)
    assert torch.allclose(blocks.per_frame(), frames.per_frame(), atol=1e-5)
    # one patch equals the raw pattern at that token
    f, r, c = 1, 2, 3
    pos = int(inputs.layout.video_positions[f * h * w + r * w + c])
    assert torch.allclose(patches.to_video()[:, f, r, c], cache["pattern", 2][0, :, -1, pos], atol=1e-6)
    mean = video_attention(model, inputs, query="last", layers=2, heads="mean", video="patch", cache=cache)
    assert torch.allclose(mean.to_video()[0], patches.to_video().mean(0), atol=1e-6)
    assert mean.heads == ["L2 mean"]


def test_labels(model, inputs):
    view = video_attention(model, inputs, query="question", layers=0, video="patch", block=(1, 1))
    labels = view.labels
    assert "f0[0,0]" in labels and "f3[2,1]" in labels
    assert "Q:direction" in labels and "Q:purple" in labels
    assert "B:left" in labels and "<sys>" in labels
    last = video_attention(model, inputs, query="last", layers=0, video="frame")
    assert last.labels.count("last") == 1 and {"f0", "f1", "f2", "f3"} <= set(last.labels)
    assert last.heads == [f"L0H{h}" for h in range(model.cfg.n_heads)]


def test_bad_arguments(model, inputs):
    with pytest.raises(KeyError):
        video_attention(model, inputs, query="nonsense")
    with pytest.raises(ValueError, match="layers"):
        video_attention(model, inputs, layers=99)
    with pytest.raises(ValueError, match="heads"):
        video_attention(model, inputs, heads="max")
    with pytest.raises(ValueError, match="video"):
        video_attention(model, inputs, video="pixel")


def test_html_is_self_contained_with_labels(model, inputs, tmp_path):
    view = video_attention(model, inputs, query="question", layers=[0, 1], heads="mean")
    patches = video_attention(model, inputs, query="last", layers=1, video="patch")
    path = save_html(tmp_path / "views" / "attn.html", [heads_panel(view), video_tokens_panel(patches)])
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]*\bsrc\s*=", html)          # nothing loaded from a URL
    assert "unpkg.com" not in html
    scripts = re.findall(r"<script>\n(.*?)\n</script>", html, flags=re.S)
    assert len(scripts) == 2 and scripts[0].count("var CircuitsVis") == 1  # the bundle, inlined once
    assert "import" not in scripts[1] and "http" not in scripts[1]    # the render calls fetch nothing
    calls = re.findall(r'CircuitsVis\.render\("([^"]+)", CircuitsVis\.(\w+), (\{.*?\})\);\n', html)
    assert [c[1] for c in calls] == ["AttentionHeads", "ColoredTokensMulti"]
    for uid, _, _ in calls:
        assert f'id="{uid}"' in html
    heads_props, tokens_props = json.loads(calls[0][2]), json.loads(calls[1][2])
    assert "Q:direction" in heads_props["tokens"] and "f2" in heads_props["tokens"]
    n = len(heads_props["tokens"])
    assert np.asarray(heads_props["attention"]).shape == (1, n, n)
    assert "f3[3,3]" in tokens_props["tokens"] and len(tokens_props["tokens"]) == inputs.layout.video_positions.numel()
    assert np.asarray(tokens_props["values"]).shape == (inputs.layout.video_positions.numel(), model.cfg.n_heads)
    if shutil.which("node"):  # the inline scripts parse as JavaScript
        for i, js in enumerate(scripts):
            f = tmp_path / f"s{i}.js"
            f.write_text(js)
            assert subprocess.run(["node", "--check", str(f)], capture_output=True).returncode == 0


def test_circuitsvis_rendered_html(model, inputs):
    view = video_attention(model, inputs, query="last", layers=2)
    r = heads_html(view)
    assert "AttentionHeads" in r.local_src and "f1" in r.local_src and "unpkg" not in r.local_src
    assert "unpkg" in str(r)  # circuitsvis' CDN form
    with pytest.raises(ValueError, match="max_cells"):
        heads_panel(view, max_cells=10)


def test_page_never_holds_the_full_pattern(model, inputs):
    view = video_attention(model, inputs, query="question", layers=[0, 1, 2])
    html = page_html([heads_panel(view)])
    props = json.loads(re.findall(r"CircuitsVis\.AttentionHeads, (\{.*?\})\);\n", html)[0])
    S, H = inputs.layout.seq_len, model.cfg.n_heads
    assert np.asarray(props["attention"]).size < H * S * S / 5


def test_knockout_view_blocks_cross_frame(model, inputs, tmp_path):
    views = compare_knockout(model, inputs, "video->video[cross_frame]", query="frame:2", layers=[0, 1, 2],
                             heads="mean")
    full, ko = views.values()
    assert list(views) == ["full attention", "blocked: video->video[cross_frame]"]
    assert float(full.per_frame()[0, :2].sum()) > 1e-3
    assert torch.allclose(ko.per_frame()[0, :2], torch.zeros(2), atol=1e-7)  # frames 0, 1 unreachable
    assert float(ko.per_frame()[0, 2]) > float(full.per_frame()[0, 2])
    png = tmp_path / "ko.png"
    fig = plot_overlay(views, inputs.video.frames, path=png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 2 * inputs.layout.n_frames + 1  # rows x slots + colour bar
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_slot_frames():
    assert slot_frames(8, 4) == [1, 3, 5, 7]
    assert slot_frames(8, 8) == list(range(8))
    assert slot_frames(4, 8) == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.fixture(scope="module")
def paper_layout(tmp_path_factory):
    """A tiny model at the paper's video grid: 8x12x12 = 1152 video tokens, about 1270 positions."""
    from videolens.testing import make_tiny_pllava, write_clip

    tmp = tmp_path_factory.mktemp("paper_layout")
    ck = make_tiny_pllava(tmp / "m", pooling_shape=(8, 12, 12), n_layers=1, max_pos=2048, d_model=32, n_heads=2,
                          image_size=48, patch_size=4, d_vision=16, vision_layers=1, extra_config={"num_frames": 8})
    model = vl.HookedVideoLLM.from_pretrained(ck, device="cpu")
    sample = vl.VideoQA(video=str(write_clip(tmp / "clip.mp4", n_frames=16)), question=QUESTION,
                        candidates=CANDIDATES, answer=CANDIDATES[0])
    return model, model.prepare(sample)


def _chromium():
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)),
                None)


def test_patch_pages_pool_themselves_to_stay_small(paper_layout, tmp_path):
    """At the paper's layout a per-token page is over 10 MB (Chromium did not draw it in 4 minutes); by
    default the view pools patches into blocks so the page stays under 2 MB and draws in seconds,
    says so, and still adds up to the unpooled attention."""
    from videolens.viz.pooling import PAGE_VALUES, auto_block

    model, inputs = paper_layout
    assert inputs.layout.video_grid == (8, 12, 12) and inputs.seq_len > 1200
    fine = video_attention(model, inputs, query="last", layers=0, heads="mean", video="patch", block=(1, 1))
    auto = video_attention(model, inputs, query="last", layers=0, heads="mean", video="patch")
    assert fine.matrix.shape[-1] > 1150 and fine.matrix.numel() > 5 * PAGE_VALUES
    assert auto.matrix.numel() <= PAGE_VALUES and "pooled 3x3" in auto.title
    assert auto_block(inputs.layout, [inputs.layout.last], 1) == (3, 3)
    assert auto_block(inputs.layout, [inputs.layout.last], 1, budget=10**9) == (1, 1)
    assert torch.allclose(auto.per_frame(), fine.per_frame(), atol=1e-5)  # pooling moves no attention
    page = save_html(tmp_path / "auto.html", [heads_panel(auto)])
    assert page.stat().st_size < 2_000_000
    assert len(page_html([heads_panel(fine)])) > 10_000_000  # what the default avoids


@pytest.mark.slow
def test_pooled_patch_page_draws_in_chromium(paper_layout, tmp_path):
    """A browser draws the default (pooled) page at the paper's layout in seconds (Chromium, headless;
    ~5 s of CPU, so under -m slow)."""
    import time

    model, inputs = paper_layout
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here: the page was not drawn")
    auto = video_attention(model, inputs, query="last", layers=0, heads="mean", video="patch")
    page = save_html(tmp_path / "auto.html", [heads_panel(auto)])

    t0 = time.perf_counter()
    out = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and time.perf_counter() - t0 < 30
    assert "f3[0:3,0:3]" in out.stdout  # circuitsvis drew the pooled unit labels
