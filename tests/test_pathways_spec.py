"""Pathway specs: shipped specs load, bad specs raise naming the entry, the relative-depth rule."""

from __future__ import annotations

import json

import pytest

from videolens.pathways import EDGE_TYPES, SpecError, list_specs, load_spec, map_layers, spec_from_dict

SHIPPED = {  # REFERENCE section 2, "Effective pathways" (0-indexed, inclusive, kept)
    "llava-next-7b-video-ft": (32, (5, 14), (5, 19), (15, 24)),
    "llava-next-13b-video-ft": (40, (5, 14), (5, 19), (15, 29)),
    "mini-internvl-4b-video-ft": (32, (5, 14), (5, 19), (10, 29)),
    "videollama3-7b": (28, (0, 14), (5, 19), (20, 27)),
}


def base(**over):
    d = {
        "name": "t",
        "n_layers": 32,
        "kept": {"cross_frame": [[5, 14]], "video_to_question": [[5, 19]], "question_to_last": [[15, 24]]},
        "always_blocked": {"video_to_last": "all", "video_to_video": {"after": "video_to_question"}},
    }
    d.update(over)
    return d


def test_shipped_specs_match_the_reference_table():
    # the paper's specs, and the bundled model's discovered one (tests/test_discover.py)
    assert sorted([*SHIPPED, "tiny-videollm-discovered"]) == list_specs()
    for name, (L, cf, vq, ql) in SHIPPED.items():
        spec = load_spec(name)
        plan = spec.plan()
        assert spec.n_layers == L
        assert plan.kept_layers["cross_frame"] == tuple(range(cf[0], cf[1] + 1))
        assert plan.kept_layers["video_to_question"] == tuple(range(vq[0], vq[1] + 1))
        assert plan.kept_layers["question_to_last"] == tuple(range(ql[0], ql[1] + 1))
        # always blocked: last->last and video->last everywhere; video->video after the last
        # video->question layer; question->question after the last question->last layer
        assert plan.blocked_layers["last_to_last"] == tuple(range(L))
        assert plan.blocked_layers["video_to_last"] == tuple(range(L))
        assert plan.blocked_layers["video_to_video"] == tuple(range(vq[1] + 1, L))
        assert plan.blocked_layers["question_to_question"] == tuple(range(ql[1] + 1, L))
        # a kept type is blocked exactly where it is not kept
        for t in ("cross_frame", "video_to_question", "question_to_last"):
            assert set(plan.blocked_layers[t]) == set(range(L)) - set(plan.kept_layers[t])


def test_spec_from_user_file_and_yaml(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps(base(edge_types={"video_to_first_frame": ["video->frame:0"]},
                                 always_blocked={"video_to_first_frame": [[0, 3]]})))
    spec = load_spec(str(p))
    assert spec.plan().blocked_layers["video_to_first_frame"] == (0, 1, 2, 3)
    yaml = pytest.importorskip("yaml")
    q = tmp_path / "mine.yaml"
    q.write_text(yaml.safe_dump(base()))
    assert load_spec(q).plan().kept_layers == spec.plan().kept_layers


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(kept={"cross_frame": [[5, 14], [10, 20]]}), "kept['cross_frame']: ranges [5, 14] and [10, 20] overlap"),
        (dict(kept={"cross_frame": [[5, 32]]}), "kept['cross_frame']: range [5, 32] is out of range for 32 layers"),
        (dict(kept={"cross_frame": [[-1, 3]]}), "range [-1, 3] is out of range"),
        (dict(kept={"cross_frame": [[9, 3]]}), "range [9, 3] has first > last"),
        (dict(kept={"cross_frames": [[5, 14]]}), "kept['cross_frames']: unknown edge type 'cross_frames'"),
        (dict(always_blocked={"video_too_last": "all"}), "always_blocked['video_too_last']: unknown edge type"),
        (dict(always_blocked={"video_to_video": {"after": "nope"}}), "'after' names 'nope'"),
        (dict(always_blocked={"cross_frame": [[14, 20]]}), "'cross_frame' is also kept in layer(s) [14]"),
        (dict(always_blocked={"video_to_last": [[3, 40]]}), "always_blocked['video_to_last']: range [3, 40]"),
        (dict(edge_types={"x": ["video=>last"]}), "edge_types['x']"),
        (dict(edge_types={"x": ["video->lastt"]}), "unknown token group 'lastt'"),
        (dict(edge_types={"x": ["video->video[sideways]"]}), "unknown relation 'sideways'"),
        (dict(n_layers=0), "'n_layers' must be a positive integer"),
        (dict(kept={"cross_frame": [5, 14]}), "range 5 must be [first, last]"),
        (dict(layers={}), "unknown key(s) ['layers']"),
    ],
)
def test_bad_specs_raise_naming_the_entry(change, needle):
    with pytest.raises(SpecError) as exc:
        spec_from_dict(base(**change), "bad.json")
    assert needle in str(exc.value)
    assert "bad.json" in str(exc.value)


def test_bad_files_raise(tmp_path):
    p = tmp_path / "dup.json"
    p.write_text('{"name": "d", "n_layers": 4, "kept": {"cross_frame": [[0, 1]], "cross_frame": [[2, 3]]}}')
    with pytest.raises(SpecError, match="duplicate key 'cross_frame'"):
        load_spec(p)
    with pytest.raises(FileNotFoundError, match="llava-next-7b-video-ft"):
        load_spec("no-such-spec")
    missing = base()
    del missing["kept"]
    with pytest.raises(SpecError, match="missing field 'kept'"):
        spec_from_dict(missing)


def test_digest_follows_content():
    kept = dict(base()["kept"], cross_frame=[[5, 13]])
    a, b = spec_from_dict(base()), spec_from_dict(base(kept=kept))
    assert a.digest == spec_from_dict(base()).digest and a.digest != b.digest


# ---- relative depth -----------------------------------------------------------------------------
def test_map_layers_identity_at_the_same_depth():
    for L in (3, 8, 28, 32, 40):
        for a in range(L):
            for b in range(a, L):
                assert map_layers([(a, b)], L, L) == tuple(range(a, b + 1))


def by_hand(a, b, src, dst):
    """The documented rule: target layer j is in [a, b] when (j + 0.5) / dst lies in [a / src, (b + 1) / src)."""
    return tuple(j for j in range(dst) if a / src <= (j + 0.5) / dst < (b + 1) / src)


def test_map_layers_by_relative_centre():
    for a, b in [(5, 14), (5, 19), (15, 24), (0, 14), (20, 31), (10, 29)]:
        for dst in (3, 5, 8, 16, 40, 64):
            got = map_layers([(a, b)], 32, dst)
            want = by_hand(a, b, 32, dst)
            assert got == want or (not want and len(got) == 1), (a, b, dst, got, want)
    assert map_layers([(5, 14)], 32, 8) == (1, 2, 3)
    assert map_layers([(5, 19)], 32, 8) == (1, 2, 3, 4)


def test_map_layers_tiles_and_never_empties():
    # ranges that tile the source depth tile the target depth: kept and "after" never overlap
    for dst in range(1, 41):
        ranges = [(0, 4), (5, 19), (20, 31)]
        parts = [map_layers([r], 32, dst) for r in ranges]
        if all(by_hand(*r, 32, dst) for r in ranges):  # no range fell back to its centre layer
            assert [l for p in parts for l in p] == list(range(dst))
        for r in [(0, 0), (5, 14), (31, 31)]:
            assert map_layers([r], 32, dst), (r, dst)


@pytest.mark.parametrize("name", sorted(SHIPPED))
@pytest.mark.parametrize("depth", [3, 4, 8])
def test_shipped_specs_on_tiny_depths(name, depth):
    plan = load_spec(name).plan(depth)
    assert plan.n_layers == depth and len(plan.per_layer) == depth
    for t in ("cross_frame", "video_to_question", "question_to_last"):
        assert plan.kept_layers[t], (name, depth, t)
    last_vq = max(plan.kept_layers["video_to_question"])
    assert plan.blocked_layers["video_to_video"] == tuple(range(last_vq + 1, depth))
    for l in range(depth):  # blocked types of a layer are those whose layer lists include it
        assert set(plan.blocked_types(l)) == {t for t, ls in plan.blocked_layers.items() if l in ls}


def test_edge_types_are_known_pairs():
    from videolens.hooked.edges import parse_pair

    for name, pairs in EDGE_TYPES.items():
        for p in pairs:
            parse_pair(p)
