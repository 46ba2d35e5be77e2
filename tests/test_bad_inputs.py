"""Every bad input gets one clear line: CLI exit code 2, the message names the file / field /
argument and what was expected, no traceback; where the input can be checked before the model
loads, it is (issue: reliability). Each row of ``CASES`` is one input of the bad-input trial.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Callable, Dict, List

import pytest
import torch
from safetensors.torch import load_file, save_file

from videolens.cli import main
from videolens.testing import make_tiny_pllava, write_clip

LOADED = "Moving model to device"  # TransformerLens prints it once the model is built


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    base = make_tiny_pllava(root / "base", n_layers=2, pooling_shape=(2, 2, 2), extra_config={"num_frames": 2},
                            d_model=32, n_heads=2, vision_layers=1, d_vision=16, image_size=16)
    clip = write_clip(root / "clip.mp4", n_frames=8)
    (root / "notvideo.mp4").write_text("hello")
    (root / "afile").write_text("x")
    return {"root": root, "base": base, "clip": clip}


# ---- builders ---------------------------------------------------------------------------------------
def ckpt(edit: Callable[[Path], None]):
    """A copy of the base checkpoint with ``edit`` applied; the case runs ``answer`` on it."""
    def build(w, tmp):
        d = tmp / "ckpt"
        shutil.copytree(w["base"], d)
        edit(d)
        return ["answer", "--model", str(d), *question(w)]
    return build


def config_edit(change: Callable[[dict], None]):
    def edit(d: Path):
        c = json.loads((d / "config.json").read_text())
        change(c)
        (d / "config.json").write_text(json.dumps(c))
    return ckpt(edit)


def tensor_edit(change: Callable[[dict], None]):
    def edit(d: Path):
        sd = load_file(str(d / "model.safetensors"))
        change(sd)
        save_file(sd, str(d / "model.safetensors"))
    return ckpt(edit)


def question(w, *extra) -> List[str]:
    return ["--video", str(w["clip"]), "--question", "What moves?", "--candidates", "left", "right", *extra]


def answer(*args):
    return lambda w, tmp: ["answer", "--model", str(w["base"]), *[a.format(**w) for a in args]]


def flow(*args, data=None):
    """``flow`` on a one-entry data file (``data`` replaces the entries), with the given extra args."""
    def build(w, tmp):
        entries = data if data is not None else [GOOD]
        (tmp / "d.json").write_text(json.dumps(entries) if not isinstance(entries, str) else entries)
        return ["flow", "--model", str(w["base"]), "--data", str(tmp / "d.json"), "--video-root", str(w["root"]),
                "--target", "cross-frame", "--window", "1", "--out", str(tmp / "out"), "--no-figures",
                *[a.format(tmp=tmp, **w) for a in args]]
    return build


def _flow_dir(tmp):
    """A folder holding a (header-only) flow records file."""
    (tmp / "flow").mkdir(exist_ok=True)
    (tmp / "flow" / "records.jsonl").write_text('{"_run": true, "config": {}}\n')
    return tmp / "flow"


def command(name, *args):
    """``name`` (genprob, pathways, lens) on a one-entry data file, with the given extra args."""
    def build(w, tmp):
        (tmp / "d.json").write_text(json.dumps([GOOD]))
        spec = ["--spec", "llava-next-7b-video-ft"] if name == "pathways" else []
        return [name, "--model", str(w["base"]), "--data", str(tmp / "d.json"), "--video-root", str(w["root"]),
                *spec, "--out", str(tmp / "out"), "--no-figures", *args]
    return build


GOOD = {"video": "clip.mp4", "question": "What moves?", "candidates": ["left", "right"], "answer": "left"}


def entry(**change):
    e = dict(GOOD, **change)
    return [{k: v for k, v in e.items() if v is not ...}]


def _other_family(w, tmp) -> Path:
    """A copy of the base checkpoint whose config.json names a family nobody handles."""
    d = tmp / "other"
    shutil.copytree(w["base"], d)
    c = json.loads((d / "config.json").read_text())
    c["model_type"] = "blip"
    (d / "config.json").write_text(json.dumps(c))
    return d


def truncate(d: Path):
    b = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(b[: len(b) // 2])


def as_folder(d: Path):
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").mkdir()


def shard_index(text: str):
    def edit(d: Path):
        (d / "model.safetensors.index.json").write_text(text)
    return edit


def q_shape(sd):
    k = next(k for k in sd if k.endswith("layers.1.self_attn.q_proj.weight"))
    sd[k] = sd[k][:, :-1].contiguous()


def int32(sd):
    k = next(k for k in sd if k.endswith("layers.0.mlp.up_proj.weight"))
    sd[k] = sd[k].to(torch.int32)


# (id, build(world, tmp) -> argv, text the one error line must contain, checked before the model loads)
CASES = [
    # checkpoints
    ("corrupt-safetensors", ckpt(lambda d: (d / "model.safetensors").write_bytes(b"garbage" * 99)),
     "model.safetensors: not a readable weights file", True),
    ("truncated-safetensors", ckpt(truncate), "model.safetensors: not a readable weights file", True),
    ("safetensors-is-folder", ckpt(as_folder), "model.safetensors: expected a weights file, found a folder", True),
    ("index-not-json", ckpt(shard_index("{oops")), "model.safetensors.index.json is not valid JSON", True),
    ("index-without-map", ckpt(shard_index('{"metadata": {}}')), "expected an object with a 'weight_map'", True),
    ("config-is-list", ckpt(lambda d: (d / "config.json").write_text("[1, 2]")), "config.json: expected a JSON object", True),
    ("config-not-json", ckpt(lambda d: (d / "config.json").write_text("{")), "config.json is not valid JSON", True),
    ("no-config", ckpt(lambda d: (d / "config.json").unlink()), "has no config.json", True),
    ("no-weights", ckpt(lambda d: (d / "model.safetensors").unlink()), "holds no weights", True),
    ("size-as-string", config_edit(lambda c: c["text_config"].update(hidden_size="32")),
     "config.json: text_config.hidden_size must be an integer, got '32' (str)", True),
    ("size-as-float", config_edit(lambda c: c["text_config"].update(num_hidden_layers=2.5)),
     "text_config.num_hidden_layers must be an integer, got 2.5", True),
    ("bad-pooling-shape", config_edit(lambda c: c.update(pooling_shape=[2, 2])), "pooling_shape must be three", True),
    ("unknown-text-model", config_edit(lambda c: c["text_config"].update(model_type="gpt_foo")),
     "text_config.model_type 'gpt_foo' is not a supported text backbone; supported: ['llama',", True),
    ("unknown-family", config_edit(lambda c: c.update(model_type="blip")), "'blip' is not a supported VideoLLM family", True),
    ("int32-tensor", tensor_edit(int32), "'language_model.model.layers.0.mlp.up_proj.weight' has dtype torch.int32", True),
    ("shape-mismatch", tensor_edit(q_shape),
     "language_model.model.layers.1.self_attn.q_proj.weight has shape (32, 31), expected (32, 32) from config.json", True),
    ("absurd-depth", config_edit(lambda c: c["text_config"].update(num_hidden_layers=1_000_000)),
     "config.json text_config.num_hidden_layers=1000000, but the weights hold 2 layer(s)", True),
    ("absurd-width", config_edit(lambda c: c["text_config"].update(hidden_size=1_000_000)),
     "text_config.hidden_size=1000000 is larger than every tensor of the checkpoint", True),
    ("absurd-context", config_edit(lambda c: c["text_config"].update(max_position_embeddings=1_000_000_000)),
     "text_config.max_position_embeddings=1000000000 is above", True),
    ("heads-do-not-divide", config_edit(lambda c: c["text_config"].update(num_attention_heads=3)),
     "text_config.num_attention_heads=3 does not divide text_config.hidden_size=32", True),
    ("missing-config-field", config_edit(lambda c: c["text_config"].pop("num_hidden_layers")),
     "config.json leaves text_config.num_hidden_layers unset", True),
    ("no-tokenizer", ckpt(lambda d: [f.unlink() for f in d.glob("tokenizer*")]), "no tokenizer files", True),
    ("no-tokenizer-json", ckpt(lambda d: (d / "tokenizer.json").unlink()), "no tokenizer files (tokenizer.json,", True),
    ("no-checkpoint-folder", answer("--model", "{root}/nowhere", "--video", "{clip}", "--question", "q",
                                    "--candidates", "a", "b"), "checkpoint folder not found", True),
    # arguments
    ("device-cuda-absent", answer("--device", "cuda:0", "--video", "{clip}", "--question", "q", "--candidates", "a", "b"),
     "argument --device: 'cuda:0': CUDA is not available" if not torch.cuda.is_available() else "", True),
    ("device-nonsense", answer("--device", "nonsense", "--video", "{clip}", "--question", "q", "--candidates", "a", "b"),
     "argument --device: expected a torch device", True),
    ("dtype-unknown", answer("--dtype", "int8", "--video", "{clip}", "--question", "q", "--candidates", "a", "b"),
     "argument --dtype: invalid choice", True),
    ("num-frames-zero", answer("--num-frames", "0", "--video", "{clip}", "--question", "q", "--candidates", "a", "b"),
     "argument --num-frames: expected a positive integer", True),
    ("pooling-shape-two", answer("--pooling-shape", "8-12", "--video", "{clip}", "--question", "q", "--candidates", "a", "b"),
     "argument --pooling-shape: expected three positive integers", True),
    ("video-missing", answer("--video", "{root}/none.mp4", "--question", "q", "--candidates", "a", "b"),
     "--video", True),
    ("video-not-a-video", answer("--video", "{root}/notvideo.mp4", "--question", "q", "--candidates", "a", "b"),
     "cannot decode", False),
    ("clip-past-end", answer("--video", "{clip}", "--question", "q", "--candidates", "a", "b", "--start", "50", "--end", "60"),
     "is past the end of", False),
    ("start-after-end", answer("--video", "{clip}", "--question", "q", "--candidates", "a", "b", "--start", "5", "--end", "2"),
     "start=5.0 must be before end=2.0", True),
    ("thirty-candidates", answer("--video", "{clip}", "--question", "q", "--candidates", *[f"c{i}" for i in range(30)]),
     "--candidates/--answer/--start/--end: at most 26 candidates, got 30", True),
    ("duplicate-candidates-but-spaces", answer("--video", "{clip}", "--question", "q", "--candidates", "a", "a "),
     "duplicate candidates ['a', 'a ']", True),
    ("broken-preprocessor-config", ckpt(lambda d: (d / "preprocessor_config.json").write_text("{oops")),
     "preprocessor_config.json is not valid JSON", True),
    ("duplicate-candidates", answer("--video", "{clip}", "--question", "q", "--candidates", "a", "a"),
     "duplicate candidates ['a']", True),
    ("placeholder-in-question", answer("--video", "{clip}", "--question", "what <image>?", "--candidates", "a", "b"),
     "question contains the placeholder string '<image>'", True),
    ("forged-option-line", answer("--video", "{clip}", "--question", "q", "--candidates", "a", "b\n(C) c"),
     "forge an option line", True),
    ("answer-not-an-option", answer("--video", "{clip}", "--question", "q", "--candidates", "a", "b", "--answer", "z"),
     "answer 'z' is not among the candidates", True),
    ("out-is-a-file", flow("--out", "{root}/afile"), "argument --out: ", True),
    ("out-below-a-file", flow("--out", "{root}/afile/sub"), "afile is a file, so no folder can be made below it", True),
    ("data-is-a-folder", lambda w, tmp: ["flow", "--data", str(w["root"]), "--video-root", str(w["root"]),
                                         "--target", "cross-frame", "--out", str(tmp / "o")],
     "is a folder; expected a JSON annotation file", True),
    ("data-missing", lambda w, tmp: ["flow", "--data", str(tmp / "none.json"), "--video-root", str(w["root"]),
                                     "--target", "cross-frame", "--out", str(tmp / "o")], "annotation file not found", True),
    ("video-root-missing", lambda w, tmp: ["flow", "--data", str(tmp), "--video-root", str(tmp / "none"),
                                           "--target", "cross-frame", "--out", str(tmp / "o")], "--video-root", True),
    ("data-and-video", flow("--video", "{clip}", "--question", "q", "--candidates", "a", "b"), "give either", True),
    ("benchmark-with-video-root", lambda w, tmp: ["flow", "--data", "tvbench:action_sequence", "--video-root",
                                                  str(w["root"]), "--target", "cross-frame", "--out", str(tmp / "o")],
     "--video-root is not used with --data tvbench:action_sequence (tvbench's videos come with it", True),
    ("benchmark-and-file", lambda w, tmp: ["flow", "--data", "tvbench", str(w["clip"]), "--target", "cross-frame",
                                           "--out", str(tmp / "o")], "give benchmark names", True),
    ("benchmark-unknown-task", lambda w, tmp: ["flow", "--data", "tvbench:sideways", "--target", "cross-frame",
                                               "--out", str(tmp / "o")], "tvbench has no task(s) ['sideways']", True),
    ("limit-zero", flow("--limit", "0"), "argument --limit: expected a positive integer, got 0", True),
    ("window-zero", flow("--window", "0"), "argument --window: expected a positive integer, got 0", True),
    ("exit-tolerance-negative", command("genprob", "--exit-tolerance", "-5"),
     "argument --exit-tolerance: expected a finite number in [0, 100], got '-5'", True),
    ("exit-tolerance-nan", command("genprob", "--exit-tolerance", "nan"), "argument --exit-tolerance: expected a finite", True),
    ("discover-threshold-nan", command("pathways", "--discover-threshold", "nan"),
     "argument --discover-threshold: expected a finite number", True),
    ("random-ratio-above-one", command("pathways", "--random-ratio", "1.5"), "argument --random-ratio: expected a finite", True),
    ("lens-k-zero", command("lens", "--k", "0"), "argument --k: expected a positive integer", True),
    ("start-nan", answer("--video", "{clip}", "--question", "q", "--candidates", "a", "b", "--start", "nan"),
     "argument --start: expected a finite number", True),
    ("demo-window-zero", lambda w, tmp: ["demo", "--window", "0", "--out", str(tmp / "o")],
     "argument --window: expected a positive integer, got 0", True),
    ("demo-n-per-task-negative", lambda w, tmp: ["demo", "--n-per-task", "-1", "--out", str(tmp / "o")],
     "argument --n-per-task: expected a positive integer, got -1", True),
    ("window-too-large", flow("--window", "20"), "window 20 is larger than the model's 2 layers", False),
    ("target-unknown", flow("--target", "sideways"), "sideways", True),
    ("heads-out-of-range", flow("--heads", "9"), "--heads [9] out of range", False),
    ("track-without-open-ended", flow("--track", "2"), "--track: only with the open-ended mode (--open-ended); "
     "this run is the knockout mode", True),
    ("heads-with-attribution", flow("--attribution", "--heads", "0"), "--heads: only with the knockout mode", True),
    ("batch-conditions-with-open-ended", flow("--open-ended", "--batch-conditions", "3"),
     "--batch-conditions: only with the knockout mode", True),
    ("batch-conditions-not-a-number", flow("--batch-conditions", "fast"),
     "argument --batch-conditions: expected a positive integer or 'auto', got 'fast'", True),
    ("two-modes", flow("--attribution", "--open-ended"), "--open-ended and --attribution are two modes", True),
    ("option-not-for-this-family", flow("--max-visual-tokens", "16"),
     "max_visual_tokens does not apply to a pllava checkpoint (its options: pooling_shape)", False),
    ("compare-model-missing", flow("--compare-model", "{root}/nowhere"), "--compare-model", True),
    ("compare-model-unknown-family", lambda w, tmp: flow("--compare-model", str(_other_family(w, tmp)))(w, tmp),
     "--compare-model", True),
    ("spec-unknown", lambda w, tmp: ["pathways", "--model", str(w["base"]), "--spec", "nonsense", *question(w),
                                     "--out", str(tmp / "o")], "no pathway spec named or at 'nonsense'", True),
    ("discover-no-flow", lambda w, tmp: ["pathways", "--model", str(w["base"]), "--discover", str(tmp / "nowhere"),
                                         *question(w), "--out", str(tmp / "o")],
     "nowhere: no flow records (records.jsonl) there", True),
    ("frontier-spec-unknown", lambda w, tmp: ["pathways", "--model", str(w["base"]), "--frontier", str(_flow_dir(tmp)),
                                              "--frontier-specs", "nonsense", *question(w), "--out", str(tmp / "o")],
     "no pathway spec named or at 'nonsense'", True),
    ("validate-data-with-spec", command("pathways", "--validate-data", "v.json"), "--validate-data: not used by this run",
     True),
    ("tolerance-with-spec", command("pathways", "--tolerance", "5"), "--tolerance: not used by this run", True),
    ("prune-with-frontier", lambda w, tmp: ["pathways", "--model", str(w["base"]), "--frontier", str(_flow_dir(tmp)),
                                            "--prune", *question(w), "--out", str(tmp / "o")],
     "--prune: not used by this run", True),
    # annotation files
    ("data-not-json", flow(data="[{"), "d.json is not valid JSON", True),
    ("data-not-a-list", flow(data='{"video": "clip.mp4"}'), "d.json is in no known annotation format (tvbench: [{video, question", True),
    ("data-tomato-bad-answer", flow(data='{"0": {"question": "q?", "options": ["a", "b"], "answer": 5, "key": "k", '
                                        '"demonstration_type": "human"}}'), "entry '0': 'answer' must be an index", True),
    ("entry-missing-field", flow(data=entry(answer=...)), "d.json: entry 0: missing field(s) ['answer']", True),
    ("entry-question-null", flow(data=entry(question=None)), "entry 0: question must be a string, got None", True),
    ("entry-question-placeholder", flow(data=entry(question="look <video> here")),
     "entry 0: question contains the placeholder string '<video>'", True),
    ("entry-forged-option", flow(data=entry(candidates=["left", "right\n(C) up"])), "entry 0: candidate 1", True),
    ("entry-duplicate-options", flow(data=entry(candidates=["left", "left"])), "entry 0: duplicate candidates", True),
    ("entry-candidates-string", flow(data=entry(candidates="LR", answer="L")),
     "entry 0: candidates must be a list of strings, got str 'LR'", True),
    ("entry-thirty-candidates", flow(data=entry(candidates=[f"c{i}" for i in range(30)], answer="c0")),
     "entry 0: at most 26 candidates", True),
    ("entry-video-null", flow(data=entry(video=None)), "entry 0: 'video' must be a file name", True),
    ("duplicate-question-id", flow(data=[dict(GOOD, question_id="x"), dict(GOOD, question_id="x")]),
     "entries 0 and 1 have the same question_id 'x'", True),
]


def run_cli(argv):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("build,expected,early", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_one_clear_line(world, tmp_path, build, expected, early):
    rc, out, err = run_cli(build(world, tmp_path))
    assert rc == 2, (out, err)
    assert "Traceback" not in err + out
    errors = [l for l in err.splitlines() if ": error: " in l]
    assert len(errors) == 1 and errors[0].startswith("videolens"), err
    assert expected in errors[0], errors[0]
    assert len(errors[0]) < 500  # no wall of names (the longest: every supported model type, every format's fields)
    if early:
        assert LOADED not in out + err, "the model loaded before the input was checked"


def test_case_ids_are_unique():
    assert len({c[0] for c in CASES}) == len(CASES) >= 50
