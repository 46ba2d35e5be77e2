"""README's set-up commands: exactly two, and CI runs the test one."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```bash\n")[1:]
    return [b.split("```", 1)[0].strip() for b in blocks]


def test_two_setup_commands_and_ci_runs_the_test_one():
    cmds = _setup_commands()
    assert len(cmds) == 2
    main, tests = cmds
    assert "torch==2.13.0" in main and "videolens demo" in main
    assert "torch==2.13.0" in tests and "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_layout_section_names_every_module_and_package():
    """README's Layout section matches the tree: every module and sub-package of the library (and
    every top-level folder it describes) is named there, and every ``x.py`` / ``x/`` it names exists."""
    import re

    layout = (ROOT / "README.md").read_text().split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w./*-]+)`", layout))
    lib = ROOT / "videolens"
    modules = {p.name for p in lib.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    packages = {p.name + "/" for p in lib.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert not modules - named, f"modules missing from README's Layout: {sorted(modules - named)}"
    assert not packages - named, f"packages missing from README's Layout: {sorted(packages - named)}"
    for top in ("videolens/", "weights_conversion/", "tiny_lab/", "tests/", "benchmarks/", "notebooks/", "docs/"):
        assert top in named and (ROOT / top).is_dir(), top
    tree = [p for p in ROOT.rglob("*") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    everywhere = {p.name for p in tree if p.suffix == ".py"} | {p.name + "/" for p in tree if p.is_dir()}
    stale = {n for n in named if re.fullmatch(r"[\w-]+(\.py|/)", n) and n not in everywhere}
    assert not stale, f"README's Layout names what is not in the tree: {sorted(stale)}"
